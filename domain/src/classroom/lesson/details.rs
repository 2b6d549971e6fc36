//! What a tutor says about a lesson, and the drafts it is parsed from.
//!
//! A draft holds a request's fields as they came (typed by JSON, not yet
//! checked); [`LessonDetails::parse`] and [`LessonPatch::parse`] turn it
//! into value types, naming every field that is wrong. The domain names
//! fields with [`LessonField`]; where they sit in a request (a JSON
//! pointer) is the API's business.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::classroom::values::{
    Capacity, Description, DurationMinutes, Invalid, LessonTitle, Money, MoneyPart,
};

/// A field of a lesson's details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LessonField {
    /// `title`.
    Title,
    /// `description`.
    Description,
    /// Starts at.
    StartsAt,
    /// Duration minutes.
    DurationMinutes,
    /// `capacity`.
    Capacity,
    /// Price amount.
    PriceAmount,
    /// Price currency.
    PriceCurrency,
}

/// One invalid field, and why.
pub type FieldIssue = (LessonField, Invalid);

/// The rule on a start time: it must be after `now`.
pub fn check_starts_at(starts_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), Invalid> {
    if starts_at > now {
        Ok(())
    } else {
        Err(Invalid("must be in the future"))
    }
}

/// A request's lesson fields, as sent.
#[derive(Debug, Clone, Default)]
pub struct LessonDraft {
    /// The title.
    pub title: String,
    /// The description.
    pub description: String,
    /// When the lesson starts.
    pub starts_at: DateTime<Utc>,
    /// How long it lasts, in minutes.
    pub duration_minutes: i64,
    /// How many students it takes.
    pub capacity: i64,
    /// The price in minor units, as sent.
    pub price_amount_minor: i64,
    /// The price's currency, as sent.
    pub price_currency: String,
}

/// A request's changes to a lesson, as sent; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatchDraft {
    /// The title.
    pub title: Option<String>,
    /// The description.
    pub description: Option<String>,
    /// When the lesson starts.
    pub starts_at: Option<DateTime<Utc>>,
    /// How long it lasts, in minutes.
    pub duration_minutes: Option<i64>,
    /// How many students it takes.
    pub capacity: Option<i64>,
    /// The price.
    pub price: Option<(i64, String)>,
}

/// What a tutor says about a lesson.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LessonDetails {
    /// The title.
    pub title: LessonTitle,
    /// The description.
    pub description: Description,
    /// When the lesson starts.
    pub starts_at: DateTime<Utc>,
    /// How long it lasts, in minutes.
    pub duration_minutes: DurationMinutes,
    /// How many students it takes.
    pub capacity: Capacity,
    /// The price.
    pub price: Money,
}

/// A change to some of a lesson's details.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LessonPatch {
    /// The title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<LessonTitle>,
    /// The description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Description>,
    /// When the lesson starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<DateTime<Utc>>,
    /// How long it lasts, in minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_minutes: Option<DurationMinutes>,
    /// How many students it takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Capacity>,
    /// The price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Money>,
}

/// Collects parse failures field by field.
#[derive(Default)]
struct Issues(Vec<FieldIssue>);

impl Issues {
    fn take<T>(&mut self, field: LessonField, parsed: Result<T, Invalid>) -> Option<T> {
        parsed.map_err(|e| self.0.push((field, e))).ok()
    }

    fn money(&mut self, amount: i64, currency: &str) -> Option<Money> {
        Money::parse(amount, currency)
            .map_err(|issues| {
                for (part, e) in issues {
                    let field = match part {
                        MoneyPart::Amount => LessonField::PriceAmount,
                        MoneyPart::Currency => LessonField::PriceCurrency,
                    };
                    self.0.push((field, e));
                }
            })
            .ok()
    }
}

impl LessonDetails {
    /// The details in `draft`, with a start after `now`; otherwise every
    /// invalid field, in the order of the fields.
    pub fn parse(draft: &LessonDraft, now: DateTime<Utc>) -> Result<Self, Vec<FieldIssue>> {
        let mut issues = Issues::default();
        let title = issues.take(LessonField::Title, LessonTitle::parse(&draft.title));
        let description = issues.take(
            LessonField::Description,
            Description::parse(&draft.description),
        );
        let starts_at = issues.take(
            LessonField::StartsAt,
            check_starts_at(draft.starts_at, now).map(|()| draft.starts_at),
        );
        let duration = issues.take(
            LessonField::DurationMinutes,
            DurationMinutes::parse(draft.duration_minutes),
        );
        let capacity = issues.take(LessonField::Capacity, Capacity::parse(draft.capacity));
        let price = issues.money(draft.price_amount_minor, &draft.price_currency);
        match (title, description, starts_at, duration, capacity, price) {
            (Some(title), Some(description), Some(starts_at), Some(d), Some(c), Some(price))
                if issues.0.is_empty() =>
            {
                Ok(Self {
                    title,
                    description,
                    starts_at,
                    duration_minutes: d,
                    capacity: c,
                    price,
                })
            }
            _ => Err(issues.0),
        }
    }

    /// The details with `patch` applied.
    pub fn patched(&self, patch: &LessonPatch) -> Self {
        let mut d = self.clone();
        if let Some(v) = &patch.title {
            d.title = v.clone();
        }
        if let Some(v) = &patch.description {
            d.description = v.clone();
        }
        if let Some(v) = patch.starts_at {
            d.starts_at = v;
        }
        if let Some(v) = patch.duration_minutes {
            d.duration_minutes = v;
        }
        if let Some(v) = patch.capacity {
            d.capacity = v;
        }
        if let Some(v) = &patch.price {
            d.price = v.clone();
        }
        d
    }

    /// When the lesson is planned to end.
    pub fn ends_at(&self) -> DateTime<Utc> {
        self.starts_at + Duration::minutes(i64::from(self.duration_minutes.get()))
    }
}

impl LessonPatch {
    /// The changes in `draft`, a new start after `now`; otherwise every
    /// invalid field. An empty draft is an empty patch.
    pub fn parse(draft: &PatchDraft, now: DateTime<Utc>) -> Result<Self, Vec<FieldIssue>> {
        let mut issues = Issues::default();
        let patch = Self {
            title: draft
                .title
                .as_deref()
                .and_then(|t| issues.take(LessonField::Title, LessonTitle::parse(t))),
            description: draft
                .description
                .as_deref()
                .and_then(|d| issues.take(LessonField::Description, Description::parse(d))),
            starts_at: draft.starts_at.and_then(|s| {
                issues.take(LessonField::StartsAt, check_starts_at(s, now).map(|()| s))
            }),
            duration_minutes: draft
                .duration_minutes
                .and_then(|n| issues.take(LessonField::DurationMinutes, DurationMinutes::parse(n))),
            capacity: draft
                .capacity
                .and_then(|n| issues.take(LessonField::Capacity, Capacity::parse(n))),
            price: draft
                .price
                .as_ref()
                .and_then(|(amount, currency)| issues.money(*amount, currency)),
        };
        if issues.0.is_empty() {
            Ok(patch)
        } else {
            Err(issues.0)
        }
    }

    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}
