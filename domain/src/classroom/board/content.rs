//! Element contents: how an operation changes them, replayed alike by the
//! `board_elements` projection and by clients, and the checksum they compare.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::ops::{OpKind, RejectReason, MAX_ID_LEN, MAX_OPS_PER_REQUEST};

/// One element edit: an operation of an edit kind, or one item of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Edit<'a> {
    /// What the operation does.
    pub kind: OpKind,
    /// The element it edits.
    pub element_id: &'a str,
    /// The operation's data.
    pub data: &'a Value,
}

/// The element edits of an operation of an edit kind or a batch; `Err`
/// says why the operation is malformed.
pub fn edits<'a>(
    kind: OpKind,
    element_id: Option<&'a str>,
    data: &'a Value,
) -> Result<Vec<Edit<'a>>, RejectReason> {
    fn id_ok(id: &str) -> bool {
        !id.is_empty() && id.len() <= MAX_ID_LEN
    }
    match kind {
        k if k.is_edit() => match element_id {
            Some(id) if id_ok(id) => Ok(vec![Edit {
                kind: k,
                element_id: id,
                data,
            }]),
            _ => Err(RejectReason::ElementIdRequired),
        },
        OpKind::Batch => {
            let items = data
                .get("ops")
                .and_then(Value::as_array)
                .filter(|a| !a.is_empty() && a.len() <= MAX_OPS_PER_REQUEST)
                .ok_or(RejectReason::BatchNeedsOneToHundredOps)?;
            items
                .iter()
                .map(|item| {
                    let kind: OpKind = item
                        .get("kind")
                        .cloned()
                        .and_then(|k| serde_json::from_value(k).ok())
                        .filter(|k: &OpKind| k.is_edit())
                        .ok_or(RejectReason::BatchItemKindInvalid)?;
                    let id = item
                        .get("element_id")
                        .and_then(Value::as_str)
                        .filter(|id| id_ok(id))
                        .ok_or(RejectReason::ElementIdRequired)?;
                    Ok(Edit {
                        kind,
                        element_id: id,
                        data: item.get("data").unwrap_or(&Value::Null),
                    })
                })
                .collect()
        }
        _ => Ok(Vec::new()),
    }
}

/// An element's value after `edit` of kind `kind` with `data`, given its
/// value before.
pub fn edit_value(kind: OpKind, before: Option<&Value>, data: &Value) -> Option<Value> {
    match kind {
        OpKind::Add => Some(data.clone()),
        OpKind::Delete => None,
        _ => {
            let mut value = before.cloned().unwrap_or(Value::Object(Default::default()));
            match (value.as_object_mut(), data.as_object()) {
                (Some(target), Some(patch)) => {
                    for (k, v) in patch {
                        if v.is_null() {
                            target.remove(k);
                        } else {
                            target.insert(k.clone(), v.clone());
                        }
                    }
                }
                _ => value = data.clone(),
            }
            Some(value)
        }
    }
}

/// How one element changed: what an undo restores and a redo repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The element it edits.
    pub element_id: String,
    /// The element before (`None`: absent).
    pub before: Option<Value>,
    /// The element after (`None`: absent).
    pub after: Option<Value>,
}

/// One step of applying an operation to element contents.
#[derive(Debug, Clone, PartialEq)]
pub enum Step<'a> {
    /// Edit one element.
    Edit(Edit<'a>),
    /// Set the element to this value (undo and redo).
    Set(&'a str, Option<&'a Value>),
    /// Remove every element.
    ClearAll,
}

/// The steps that apply an applied operation to element contents. Undo and
/// redo need the changes their target operation made.
pub fn plan<'a>(
    kind: OpKind,
    element_id: Option<&'a str>,
    data: &'a Value,
    target: Option<&'a [Change]>,
) -> Vec<Step<'a>> {
    match kind {
        OpKind::Undo => target
            .unwrap_or_default()
            .iter()
            .rev()
            .map(|c| Step::Set(&c.element_id, c.before.as_ref()))
            .collect(),
        OpKind::Redo => target
            .unwrap_or_default()
            .iter()
            .map(|c| Step::Set(&c.element_id, c.after.as_ref()))
            .collect(),
        OpKind::Clear => vec![Step::ClearAll],
        _ => edits(kind, element_id, data)
            .unwrap_or_default()
            .into_iter()
            .map(Step::Edit)
            .collect(),
    }
}

/// The SHA-256 of a board's elements, hex: over each element in id order,
/// its id, a NUL, its value as canonical JSON (object members sorted) and a
/// newline.
pub fn checksum<'a>(elements: impl IntoIterator<Item = (&'a str, &'a Value)>) -> String {
    let mut sorted: Vec<_> = elements.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut hash = Sha256::new();
    let mut buf = String::new();
    for (id, value) in sorted {
        buf.clear();
        canonical(value, &mut buf);
        hash.update(id.as_bytes());
        hash.update([0]);
        hash.update(buf.as_bytes());
        hash.update(b"\n");
    }
    hex::encode(hash.finalize())
}

fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<_> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Element contents replayed from the operation log, as a client would.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BoardModel {
    /// The elements by id.
    pub elements: BTreeMap<String, Value>,
    history: HashMap<u64, Vec<Change>>,
}

impl BoardModel {
    /// Apply the operation applied at `server_version`.
    pub fn apply(
        &mut self,
        server_version: u64,
        kind: OpKind,
        element_id: Option<&str>,
        data: &Value,
        target_version: Option<u64>,
    ) {
        let target = target_version.and_then(|v| self.history.get(&v).cloned());
        let mut changes = Vec::new();
        for step in plan(kind, element_id, data, target.as_deref()) {
            let (id, after) = match step {
                Step::ClearAll => {
                    self.elements.clear();
                    continue;
                }
                Step::Edit(e) => (
                    e.element_id,
                    edit_value(e.kind, self.elements.get(e.element_id), e.data),
                ),
                Step::Set(id, value) => (id, value.cloned()),
            };
            let before = match &after {
                Some(v) => self.elements.insert(id.to_owned(), v.clone()),
                None => self.elements.remove(id),
            };
            changes.push(Change {
                element_id: id.to_owned(),
                before,
                after,
            });
        }
        self.history.insert(server_version, changes);
    }

    /// The checksum of the elements, as [`checksum`] computes it.
    pub fn checksum(&self) -> String {
        checksum(self.elements.iter().map(|(k, v)| (k.as_str(), v)))
    }
}
