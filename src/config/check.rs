//! `modemgate check-config`: validate a file the way the daemon would, and say everything wrong with it.

use std::path::Path;
use std::process::ExitCode;

use super::Report;

/// Print every finding to stdout as `PATH:LINE: message` (warnings as `PATH:LINE: warning: message`) and
/// return exit status 0 if the daemon would accept the file, 1 if not. Warnings alone do not fail it, so
/// packaging and CI can run it on configs that are deliberately permissive (the demo).
pub fn check_config_cli(path: &Path) -> ExitCode {
    let report = Report::from_file(path);
    for line in report.render() {
        println!("{line}");
    }
    if report.has_errors() {
        ExitCode::FAILURE
    } else {
        println!("{}: ok", path.display());
        ExitCode::SUCCESS
    }
}
