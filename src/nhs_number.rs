//! The NHS number: the key of every CP-IS record.
//!
//! Implements DOMAIN.md "NHS number check digit": ten digits, Modulus 11 with weights 10..2,
//! a computed check of 10 makes the number invalid, `0000000000` is refused although the
//! arithmetic passes, and the `999` test range is accepted only where configuration allows it.
//! [`NhsNumber::parse`] is the only way to obtain a value, so everything downstream can trust it.

use std::fmt;

/// A valid NHS number, stored as its ten digits without spaces.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NhsNumber(String);

/// Why a string is not an acceptable NHS number; the text is safe to send to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NhsNumberError {
    #[error("an NHS number has exactly 10 digits")]
    Length,
    #[error("an NHS number contains digits only (spaces are display formatting)")]
    NotDigits,
    #[error("the NHS number fails the Modulus 11 check digit")]
    CheckDigit,
    #[error("0000000000 is not an NHS number")]
    AllZero,
    #[error("NHS test numbers (999 000 0000 to 999 999 9999) are not accepted by this server")]
    TestNumber,
}

impl NhsNumber {
    /// Parses a number as a person or a system would type it: spaces are ignored.
    pub fn parse(input: &str, allow_test_numbers: bool) -> Result<Self, NhsNumberError> {
        let digits: String = input.chars().filter(|c| *c != ' ').collect();
        if !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(NhsNumberError::NotDigits);
        }
        if digits.len() != 10 {
            return Err(NhsNumberError::Length);
        }
        let d: Vec<u32> = digits.bytes().map(|b| u32::from(b - b'0')).collect();
        let sum: u32 = d[..9]
            .iter()
            .zip((2..=10).rev())
            .map(|(digit, weight)| digit * weight)
            .sum();
        let check = match 11 - (sum % 11) {
            11 => 0,
            10 => return Err(NhsNumberError::CheckDigit),
            c => c,
        };
        if check != d[9] {
            return Err(NhsNumberError::CheckDigit);
        }
        if digits == "0000000000" {
            return Err(NhsNumberError::AllZero);
        }
        if digits.starts_with("999") && !allow_test_numbers {
            return Err(NhsNumberError::TestNumber);
        }
        Ok(Self(digits))
    }

    /// The ten digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Every valid NHS number of the test range (999 000 0000 to 999 999 9999), in order:
    /// demo and benchmark data use these so that no real person's number is ever generated.
    pub fn test_numbers() -> impl Iterator<Item = NhsNumber> {
        (999_000_000u32..=999_999_999).filter_map(|prefix| {
            let digits = prefix.to_string();
            let sum: u32 = digits
                .bytes()
                .zip((2..=10).rev())
                .map(|(b, w)| u32::from(b - b'0') * w)
                .sum();
            match 11 - (sum % 11) {
                10 => None,
                11 => Some(NhsNumber(format!("{digits}0"))),
                c => Some(NhsNumber(format!("{digits}{c}"))),
            }
        })
    }

    /// A valid test-range NHS number chosen by `index` (wrapping within the range).
    pub fn test_number(index: u32) -> Self {
        let start = 999_000_000 + index % 1_000_000;
        (start..=999_999_999)
            .chain(999_000_000..start)
            .find_map(|p| (0..10).find_map(|c| Self::parse(&format!("{p}{c}"), true).ok()))
            .unwrap_or_else(|| NhsNumber("9990000018".to_owned()))
    }
}

impl fmt::Display for NhsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_valid_numbers_parse() {
        for n in ["9449306753", "9000000009", "9434765919", "944 930 6753"] {
            assert!(NhsNumber::parse(n, false).is_ok(), "{n}");
        }
    }

    #[test]
    fn numbers_failing_the_check_digit_are_refused() {
        assert_eq!(
            NhsNumber::parse("1234567890", false),
            Err(NhsNumberError::CheckDigit)
        );
        assert_eq!(
            NhsNumber::parse("9912003899", true),
            Err(NhsNumberError::CheckDigit)
        );
    }

    #[test]
    fn all_zeros_passes_the_arithmetic_but_is_refused() {
        assert_eq!(
            NhsNumber::parse("0000000000", true),
            Err(NhsNumberError::AllZero)
        );
    }

    #[test]
    fn wrong_lengths_and_letters_are_refused() {
        assert_eq!(
            NhsNumber::parse("944930675", true),
            Err(NhsNumberError::Length)
        );
        assert_eq!(
            NhsNumber::parse("94493067531", true),
            Err(NhsNumberError::Length)
        );
        assert_eq!(
            NhsNumber::parse("94493O6753", true),
            Err(NhsNumberError::NotDigits)
        );
        assert_eq!(NhsNumber::parse("", true), Err(NhsNumberError::Length));
    }

    #[test]
    fn test_range_numbers_need_configuration() {
        let n = NhsNumber::test_number(0);
        assert!(n.as_str().starts_with("999"));
        assert_eq!(
            NhsNumber::parse(n.as_str(), false),
            Err(NhsNumberError::TestNumber)
        );
        assert!(NhsNumber::parse(n.as_str(), true).is_ok());
    }

    #[test]
    fn the_test_range_enumerates_only_valid_numbers() {
        let first: Vec<NhsNumber> = NhsNumber::test_numbers().take(1000).collect();
        assert!(first
            .iter()
            .all(|n| NhsNumber::parse(n.as_str(), true).is_ok()));
        assert!(first.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(NhsNumber::test_number(999_999).as_str().len(), 10);
        assert_eq!(NhsNumber::test_number(5_000_000).as_str().len(), 10);
    }

    #[test]
    fn generated_test_numbers_are_distinct_and_valid() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..500 {
            let n = NhsNumber::test_number(i * 11);
            assert!(NhsNumber::parse(n.as_str(), true).is_ok());
            seen.insert(n);
        }
        assert_eq!(seen.len(), 500);
    }
}
