fn main() {
    println!("modemgate: work in progress");
}
