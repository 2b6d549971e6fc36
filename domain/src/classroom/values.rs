//! The classroom's value types: each is parsed once, where it enters, and
//! holds a valid value from then on.
//!
//! Their `parse` is the way in from input. Deserialising is not checked
//! again: stored events are facts that were parsed when they were recorded,
//! and must always load (a currency is lowercased as it loads, since events
//! recorded before the rule kept the case they were sent in).

use serde::{Deserialize, Deserializer, Serialize};

/// Why an input is not a valid value: a sentence about the value, such as
/// "must be 1 to 200 characters".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub &'static str);

/// Whether `s` holds a character PostgreSQL cannot store in text or `jsonb`
/// (NUL), or another control character other than tab and line breaks.
fn has_forbidden_chars(s: &str, allow_line_breaks: bool) -> bool {
    s.chars().any(|c| {
        c == '\0' || (c.is_control() && !(allow_line_breaks && matches!(c, '\n' | '\r' | '\t')))
    })
}

/// A lesson's title: 1 to 200 characters after trimming, no control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LessonTitle(String);

impl LessonTitle {
    /// The longest title, in characters.
    pub const MAX: usize = 200;

    /// The title in `s`, trimmed.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let t = s.trim();
        let n = t.chars().count();
        if n == 0 || n > Self::MAX || has_forbidden_chars(t, false) {
            return Err(Invalid(
                "must be 1 to 200 characters, without control characters",
            ));
        }
        Ok(Self(t.to_owned()))
    }

    /// The title.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A lesson's description: at most 10,000 characters; line breaks allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Description(String);

impl Description {
    /// The longest description, in characters.
    pub const MAX: usize = 10_000;

    /// The description in `s`.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        if s.chars().count() > Self::MAX || has_forbidden_chars(s, true) {
            return Err(Invalid(
                "must be at most 10000 characters, without control characters other than line breaks and tabs",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The description.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How long a lesson lasts: 15 to 480 minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DurationMinutes(u32);

impl DurationMinutes {
    /// The allowed range.
    pub const RANGE: std::ops::RangeInclusive<i64> = 15..=480;

    /// The duration `n` minutes.
    pub fn parse(n: i64) -> Result<Self, Invalid> {
        match u32::try_from(n) {
            Ok(v) if Self::RANGE.contains(&n) => Ok(Self(v)),
            _ => Err(Invalid("must be 15 to 480")),
        }
    }

    /// The minutes.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// How many students a lesson takes: 1 to 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Capacity(u32);

impl Capacity {
    /// The allowed range.
    pub const RANGE: std::ops::RangeInclusive<i64> = 1..=500;

    /// The capacity `n`.
    pub fn parse(n: i64) -> Result<Self, Invalid> {
        match u32::try_from(n) {
            Ok(v) if Self::RANGE.contains(&n) => Ok(Self(v)),
            _ => Err(Invalid("must be 1 to 500")),
        }
    }

    /// The number of seats.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The number of seats, as a count.
    pub fn seats(self) -> usize {
        self.0 as usize
    }
}

/// ISO 4217 codes of currencies in use.
const CURRENCIES: &str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL \
BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL \
GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD \
KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD \
OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP \
SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XOF XPF YER ZAR ZMW ZWL";

/// An ISO 4217 currency in use, kept in lowercase as Stripe writes it
/// (`eur`). Accepted in any case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Currency(String);

impl Currency {
    /// The currency coded `s`, in any case.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let upper = s.to_ascii_uppercase();
        if upper.len() == 3 && CURRENCIES.split(' ').any(|c| c == upper) {
            Ok(Self(upper.to_ascii_lowercase()))
        } else {
            Err(Invalid("must be an ISO 4217 currency code, such as eur"))
        }
    }

    /// The lowercase code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self(String::deserialize(d)?.to_ascii_lowercase()))
    }
}

/// An amount of money: integer minor units (cents) of a currency. Never
/// negative; money going back is an amount refunded, not a negative one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    /// In minor units (cents).
    pub amount_minor: i64,
    /// ISO 4217, lowercase.
    pub currency: Currency,
}

/// Which part of a [`Money`] is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoneyPart {
    /// `amount_minor`.
    Amount,
    /// `currency`.
    Currency,
}

impl Money {
    /// `amount_minor` of `currency`; every invalid part, each with why.
    pub fn parse(amount_minor: i64, currency: &str) -> Result<Self, Vec<(MoneyPart, Invalid)>> {
        let mut issues = Vec::new();
        if amount_minor < 0 {
            issues.push((MoneyPart::Amount, Invalid("must not be negative")));
        }
        let currency = Currency::parse(currency).map_err(|e| issues.push((MoneyPart::Currency, e)));
        match currency {
            Ok(currency) if issues.is_empty() => Ok(Self {
                amount_minor,
                currency,
            }),
            _ => Err(issues),
        }
    }
}

/// A chat message's text: 1 to 4000 characters, not only white space, no
/// control characters other than line breaks and tabs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageText(String);

impl MessageText {
    /// The longest message, in characters.
    pub const MAX: usize = 4000;

    /// The text `s`.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let n = s.chars().count();
        if n == 0 || n > Self::MAX || s.trim().is_empty() || has_forbidden_chars(s, true) {
            return Err(Invalid(
                "must be 1 to 4000 characters, not only white space, without control characters other than line breaks and tabs",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An operation's `data`: any JSON of at most 64 KiB, without NUL in any
/// string or member name (PostgreSQL's `jsonb` cannot store it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OpData(serde_json::Value);

impl OpData {
    /// The largest `data`, in bytes of JSON.
    pub const MAX_BYTES: usize = 64 * 1024;

    /// The data `v`.
    pub fn parse(v: serde_json::Value) -> Result<Self, Invalid> {
        let size = serde_json::to_vec(&v).map_or(usize::MAX, |b| b.len());
        if size > Self::MAX_BYTES {
            return Err(Invalid("must be at most 65536 bytes of JSON"));
        }
        if holds_nul(&v) {
            return Err(Invalid("must not contain NUL characters"));
        }
        Ok(Self(v))
    }

    /// The JSON.
    pub fn as_value(&self) -> &serde_json::Value {
        &self.0
    }

    /// The JSON, owned.
    pub fn into_value(self) -> serde_json::Value {
        self.0
    }
}

/// Whether any string or member name in `v` holds a NUL.
fn holds_nul(v: &serde_json::Value) -> bool {
    use serde_json::Value as V;
    match v {
        V::String(s) => s.contains('\0'),
        V::Array(items) => items.iter().any(holds_nul),
        V::Object(members) => members
            .iter()
            .any(|(k, v)| k.contains('\0') || holds_nul(v)),
        V::Null | V::Bool(_) | V::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_are_accepted_in_any_case_and_kept_in_lowercase() {
        for code in ["usd", "USD", "Usd"] {
            assert_eq!(Currency::parse(code).expect("a currency").as_str(), "usd");
        }
        assert!(Currency::parse("EURO").is_err());
        assert!(Currency::parse("xyz").is_err());
        let stored: Currency = serde_json::from_str("\"EUR\"").expect("loads");
        assert_eq!(stored.as_str(), "eur");
    }

    #[test]
    fn money_names_each_bad_part() {
        let issues = Money::parse(-1, "EURO").expect_err("both parts are bad");
        let parts: Vec<MoneyPart> = issues.iter().map(|(p, _)| *p).collect();
        assert_eq!(parts, [MoneyPart::Amount, MoneyPart::Currency]);
        let m = Money::parse(1500, "GBP").expect("valid");
        assert_eq!(
            serde_json::json!(m),
            serde_json::json!({"amount_minor": 1500, "currency": "gbp"})
        );
    }

    #[test]
    fn text_values_refuse_what_postgresql_cannot_store() {
        assert!(LessonTitle::parse("Al\0gebra").is_err());
        assert!(Description::parse("a\0b").is_err());
        assert!(MessageText::parse("hi\0").is_err());
        assert_eq!(
            Description::parse("line one\nline two")
                .expect("line breaks")
                .as_str(),
            "line one\nline two"
        );
        assert!(LessonTitle::parse("line\nbreak").is_err());
    }

    #[test]
    fn op_data_is_bounded_and_free_of_nul() {
        assert!(OpData::parse(serde_json::json!({"x": 1})).is_ok());
        let big = serde_json::json!({"s": "x".repeat(OpData::MAX_BYTES)});
        assert!(OpData::parse(big).is_err());
        assert!(OpData::parse(serde_json::json!({"a": ["ok", "n\u{0}l"]})).is_err());
        assert!(OpData::parse(serde_json::json!({"k\u{0}": 1})).is_err());
    }

    #[test]
    fn titles_are_trimmed_and_bounded() {
        assert_eq!(
            LessonTitle::parse("  Algebra ").expect("ok").as_str(),
            "Algebra"
        );
        assert!(LessonTitle::parse("   ").is_err());
        assert!(LessonTitle::parse(&"x".repeat(201)).is_err());
        assert!(LessonTitle::parse(&"x".repeat(200)).is_ok());
    }

    #[test]
    fn numbers_are_bounded() {
        assert!(DurationMinutes::parse(14).is_err());
        assert_eq!(DurationMinutes::parse(480).expect("ok").get(), 480);
        assert!(DurationMinutes::parse(i64::MAX).is_err());
        assert!(Capacity::parse(0).is_err());
        assert!(Capacity::parse(501).is_err());
        assert_eq!(Capacity::parse(-1), Err(Invalid("must be 1 to 500")));
    }
}
