//! Service-centre time stamps (TP-SCTS, TP-DT; 3GPP TS 23.040 9.2.3.11): seven swapped-BCD octets
//! `YY MM DD hh mm ss tz`.
//!
//! The zone octet counts quarter hours: after swapping, the tens digit sits in bits 0-2 of the octet, the sign
//! in bit 3 (set = west of UTC) and the units digit in the high nibble. A units nibble above 9 (seen from a ZTE
//! modem) is used arithmetically rather than refused, which is also what python-gsmmodem does.
//!
//! **Two-digit years:** 00-89 are 2000-2089 and 90-99 are 1990-1999. GSM SMS did not exist before 1990, and this
//! keeps captures from the 1990s (gammu `at-sms/09`, 1999) in their century.

use jiff::Zoned;
use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};

use super::PduError;
use super::reader::Reader;

/// Seconds in the quarter hour the zone octet counts.
const QUARTER: i32 = 15 * 60;
/// Largest zone the octet can hold: 7 tens and 9 units of quarter hours.
const MAX_QUARTERS: i32 = 79;

/// Read a 7-octet time stamp; `field` names it in errors.
pub(crate) fn decode(r: &mut Reader, field: &'static str) -> Result<Zoned, PduError> {
    let start = r.offset();
    let octets: [u8; 7] = r.array(field)?;
    let mut fields = [0i8; 6];
    for (i, (&octet, value)) in octets.iter().zip(fields.iter_mut()).enumerate() {
        let (tens, units) = (octet & 0x0F, octet >> 4);
        if tens > 9 || units > 9 {
            return Err(PduError::invalid(
                field,
                start + i,
                format!("octet {octet:02X} is not swapped BCD"),
            ));
        }
        *value = (tens * 10 + units) as i8;
    }
    let [yy, month, day, hour, minute, second] = fields;
    let year = if yy >= 90 { 1900 } else { 2000 } + i16::from(yy);
    let zone = octets[6];
    let quarters = i32::from(zone & 0x07) * 10 + i32::from(zone >> 4);
    let sign = if zone & 0x08 != 0 { -1 } else { 1 };
    let offset = Offset::from_seconds(sign * quarters * QUARTER)
        .map_err(|e| PduError::invalid(field, start + 6, format!("time zone: {e}")))?;
    DateTime::new(year, month, day, hour, minute, second, 0)
        .and_then(|dt| dt.to_zoned(TimeZone::fixed(offset)))
        .map_err(|e| PduError::invalid(field, start, format!("not a valid date and time: {e}")))
}

/// [`decode`] for a message that must not be lost over its time stamp: `None` when the seven octets are
/// there but are no date (all `FF`, all zeros, a month 13), as some SMSCs and modems send them. Only a
/// PDU too short to hold them is an error.
pub(crate) fn decode_or_none(
    r: &mut Reader,
    field: &'static str,
) -> Result<Option<Zoned>, PduError> {
    let mut probe = r.clone();
    match decode(&mut probe, field) {
        Ok(time) => {
            *r = probe;
            Ok(Some(time))
        }
        Err(truncated @ PduError::Truncated { .. }) => Err(truncated),
        Err(_) => r.array::<7>(field).map(|_| None),
    }
}

/// Append `time` as a 7-octet time stamp in its own offset, truncated to whole quarter hours (the instant is
/// kept; only the local reading moves when an offset is not a multiple of 15 minutes).
pub(crate) fn encode(out: &mut Vec<u8>, time: &Zoned) -> Result<(), PduError> {
    let bad = |reason| PduError::BadTimestamp {
        timestamp: time.to_string(),
        reason,
    };
    let quarters = time.offset().seconds() / QUARTER;
    if quarters.abs() > MAX_QUARTERS {
        return Err(bad("offset beyond 19:45 from UTC"));
    }
    let offset =
        Offset::from_seconds(quarters * QUARTER).map_err(|_| bad("offset out of range"))?;
    let local = offset.to_datetime(time.timestamp());
    let year = local.year();
    if !(1990..=2089).contains(&year) {
        return Err(bad(
            "year outside 1990-2089, which two digits cannot express",
        ));
    }
    let bcd = |value: i8| {
        let value = value.unsigned_abs();
        (value % 10) << 4 | (value / 10)
    };
    out.extend_from_slice(&[
        bcd((year % 100) as i8),
        bcd(local.month()),
        bcd(local.day()),
        bcd(local.hour()),
        bcd(local.minute()),
        bcd(local.second()),
    ]);
    let magnitude = quarters.unsigned_abs() as u8;
    let sign = if quarters < 0 { 0x08 } else { 0 };
    out.push((magnitude % 10) << 4 | (magnitude / 10) | sign);
    Ok(())
}

/// RFC 3339 with the stamp's own offset (`2007-05-03T07:04:40+05:30`), as the CLI and the API print it.
pub fn rfc3339(time: &Zoned) -> String {
    time.timestamp()
        .display_with_offset(time.offset())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_hex(hex: &str) -> Result<Zoned, PduError> {
        let bytes = hex::decode(hex).unwrap();
        decode(&mut Reader::new(&bytes), "TP-SCTS")
    }

    #[test]
    fn zone_octet_reads_quarter_hours_with_sign_in_bit_3() {
        assert_eq!(
            rfc3339(&decode_hex("70503070400422").unwrap()),
            "2007-05-03T07:04:40+05:30"
        );
        assert_eq!(
            rfc3339(&decode_hex("01901151011129").unwrap()),
            "2010-09-11T15:10:11-03:00"
        );
        assert_eq!(
            rfc3339(&decode_hex("80101010412400").unwrap()),
            "2008-01-01T01:14:42+00:00"
        );
        // Non-BCD units nibble: 2 tens + 12 units = 32 quarters.
        assert_eq!(
            rfc3339(&decode_hex("610103409544C2").unwrap()),
            "2016-10-30T04:59:44+08:00"
        );
    }

    #[test]
    fn two_digit_years_90_to_99_are_the_1990s() {
        assert_eq!(decode_hex("99309251619580").unwrap().year(), 1999);
        assert_eq!(decode_hex("98309251619580").unwrap().year(), 2089);
        assert_eq!(decode_hex("00309251619580").unwrap().year(), 2000);
    }

    #[test]
    fn bad_digits_and_dates_name_the_octet() {
        let err = decode_hex("70A03070400422").unwrap_err();
        assert!(
            matches!(
                err,
                PduError::Invalid {
                    field: "TP-SCTS",
                    offset: 1,
                    ..
                }
            ),
            "{err}"
        );
        let err = decode_hex("70313070400422").unwrap_err(); // month 13
        assert!(matches!(err, PduError::Invalid { offset: 0, .. }), "{err}");
        let err = decode_hex("705030704004").unwrap_err();
        assert!(
            matches!(
                err,
                PduError::Truncated {
                    needed: 7,
                    available: 6,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn encode_round_trips_through_decode() {
        for text in [
            "2007-05-03T07:04:40+05:30[+05:30]",
            "2010-09-11T15:10:11-03:00[-03:00]",
            "1999-12-31T23:59:59+00:00[UTC]",
            "2024-03-10T01:30:00-05:00[America/New_York]",
            "2025-06-01T12:00:00+05:45[Asia/Kathmandu]",
        ] {
            let zoned: Zoned = text.parse().unwrap();
            let mut out = Vec::new();
            encode(&mut out, &zoned).unwrap();
            let back = decode(&mut Reader::new(&out), "TP-SCTS").unwrap();
            assert_eq!(back.timestamp(), zoned.timestamp(), "{text}");
            assert_eq!(back.offset(), zoned.offset(), "{text}");
        }
    }

    #[test]
    fn encode_refuses_years_two_digits_cannot_hold() {
        let zoned: Zoned = "2090-01-01T00:00:00+00:00[UTC]".parse().unwrap();
        assert!(matches!(
            encode(&mut Vec::new(), &zoned),
            Err(PduError::BadTimestamp { .. })
        ));
    }
}
