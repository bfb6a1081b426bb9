//! The stored form of a store: the strings of the Redis keys, as one [`RawStore`].
//!
//! Loading reads the store into a `RawStore` (one Lua script, so one consistent view),
//! [`RawStore::decode`] turns it into [`StoreData`] (a JSON error is a problem naming the
//! key and field), [`RawStore::encode`] does the reverse, and [`diff`] lists the writes
//! that turn one stored form into another: a change only rewrites the keys it touches.

use std::collections::BTreeMap;

use serde_json::Value;

use super::data::{Problem, RouteList, RouteSpec, StoreData};
use super::keys::Keys;
use crate::accounts::AccountRecord;
use crate::config::TransportConfig;

/// Every key of a store as stored (JSON strings), with the version counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawStore {
    /// `{prefix}version`; 0 when the key does not exist.
    pub version: u64,
    /// `{prefix}transports`: name → JSON.
    pub transports: BTreeMap<String, String>,
    /// `{prefix}accounts`: name → JSON.
    pub accounts: BTreeMap<String, String>,
    /// `{prefix}routes:global`.
    pub global: Vec<String>,
    /// `{prefix}routes:domain:{domain}`, by the domain as written in the key.
    pub domains: BTreeMap<String, Vec<String>>,
    /// `{prefix}routes:account:{account}`.
    pub account_routes: BTreeMap<String, Vec<String>>,
    /// `{prefix}dkim:{domain}`: DKIM key entries.
    pub dkim: BTreeMap<String, Vec<String>>,
}

/// One write of a change; applied with the others in one atomic script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Replace a list with these items (delete it when empty).
    SetList { key: String, items: Vec<String> },
    /// Set one field of a hash.
    HashSet {
        key: String,
        field: String,
        value: String,
    },
    /// Delete one field of a hash.
    HashDel { key: String, field: String },
}

impl WriteOp {
    pub fn key(&self) -> &str {
        match self {
            WriteOp::SetList { key, .. }
            | WriteOp::HashSet { key, .. }
            | WriteOp::HashDel { key, .. } => key,
        }
    }
}

/// A transport as compact JSON: only the fields that are set.
pub fn transport_json(t: &TransportConfig) -> String {
    let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.retain(|k, v| {
            k == "kind"
                || !matches!(v, Value::Null | Value::Bool(false))
                    && v.as_str() != Some("")
                    && v.as_array().is_none_or(|a| !a.is_empty())
        });
    }
    v.to_string()
}

fn route_json(r: &RouteSpec) -> String {
    serde_json::to_string(r).unwrap_or_default()
}

/// Parses a JSON object (not an array, which serde would also accept for a struct).
fn parse_object<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    match serde_json::from_str::<Value>(text).map_err(|e| e.to_string())? {
        v @ Value::Object(_) => serde_json::from_value(v).map_err(|e| e.to_string()),
        _ => Err("expected a JSON object".into()),
    }
}

/// An entry that does not decode, where it is, and its text as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The route list and position, for route entries.
    pub list: Option<(RouteList, usize)>,
    /// `routes:global[1]`, `transports[NAME]`, ...
    pub at: String,
    pub raw: String,
    pub why: String,
}

fn decode_routes(
    list: RouteList,
    items: &[String],
    problems: &mut Vec<Problem>,
    invalid: &mut Vec<Invalid>,
) -> Vec<RouteSpec> {
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match parse_object::<RouteSpec>(item) {
            Ok(r) => out.push(r),
            Err(e) => {
                let why = format!("not a route object: {e}");
                problems.push(Problem::new(format!("{list}[{i}]"), why.clone()));
                invalid.push(Invalid {
                    list: Some((list.clone(), i)),
                    at: format!("{list}[{i}]"),
                    raw: item.clone(),
                    why,
                });
            }
        }
    }
    out
}

impl RawStore {
    /// Parses every JSON value; all problems are reported together.
    pub fn decode(&self) -> Result<StoreData, Vec<Problem>> {
        let (data, problems, _) = self.decode_lenient();
        if problems.is_empty() {
            Ok(data)
        } else {
            Err(problems)
        }
    }

    /// Everything that decodes, with the problems and the entries that do not (for
    /// listing and repairing a store that gateways refuse).
    pub fn decode_lenient(&self) -> (StoreData, Vec<Problem>, Vec<Invalid>) {
        let mut problems = Vec::new();
        let mut invalid = Vec::new();
        let mut data = StoreData::default();
        for (name, json) in &self.transports {
            match parse_object::<TransportConfig>(json) {
                Ok(t) => {
                    data.transports.insert(name.clone(), t);
                }
                Err(e) => {
                    let why = format!("not a transport object: {e}");
                    problems.push(Problem::new(format!("transports[{name}]"), why.clone()));
                    invalid.push(Invalid {
                        list: None,
                        at: format!("transports[{name}]"),
                        raw: json.clone(),
                        why,
                    });
                }
            }
        }
        for (name, json) in &self.accounts {
            match parse_object::<AccountRecord>(json) {
                Ok(a) => {
                    data.accounts.insert(name.clone(), a);
                }
                Err(e) => {
                    let why = format!("not an account object: {e}");
                    problems.push(Problem::new(format!("accounts[{name}]"), why.clone()));
                    invalid.push(Invalid {
                        list: None,
                        at: format!("accounts[{name}]"),
                        raw: "(hidden: account record)".into(),
                        why,
                    });
                }
            }
        }
        data.global = decode_routes(RouteList::Global, &self.global, &mut problems, &mut invalid);
        for (d, items) in &self.domains {
            let routes = decode_routes(
                RouteList::Domain(d.clone()),
                items,
                &mut problems,
                &mut invalid,
            );
            data.domains.insert(d.clone(), routes);
        }
        for (a, items) in &self.account_routes {
            let routes = decode_routes(
                RouteList::Account(a.clone()),
                items,
                &mut problems,
                &mut invalid,
            );
            data.accounts_routes.insert(a.clone(), routes);
        }
        for (domain, items) in &self.dkim {
            let mut keys = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match parse_object::<crate::config::DkimKeyConfig>(item) {
                    Ok(k) => keys.push(k),
                    Err(e) => problems.push(Problem::new(
                        format!("dkim:{domain}[{i}]"),
                        format!("not a DKIM key object: {e}"),
                    )),
                }
            }
            if !keys.is_empty() {
                data.dkim.insert(domain.clone(), keys);
            }
        }
        data.prune_empty_lists();
        (data, problems, invalid)
    }

    /// The raw list a route list is stored in.
    pub fn list_mut(&mut self, list: &RouteList) -> Option<&mut Vec<String>> {
        match list {
            RouteList::Global => Some(&mut self.global),
            RouteList::Domain(d) => self.domains.get_mut(d),
            RouteList::Account(a) => self.account_routes.get_mut(a),
        }
    }

    /// The stored form of `data` (version 0).
    pub fn encode(data: &StoreData) -> RawStore {
        let routes = |l: &[RouteSpec]| l.iter().map(route_json).collect::<Vec<_>>();
        RawStore {
            version: 0,
            transports: data
                .transports
                .iter()
                .map(|(k, t)| (k.clone(), transport_json(t)))
                .collect(),
            accounts: data
                .accounts
                .iter()
                .map(|(k, a)| (k.clone(), serde_json::to_string(a).unwrap_or_default()))
                .collect(),
            global: routes(&data.global),
            domains: data
                .domains
                .iter()
                .filter(|(_, l)| !l.is_empty())
                .map(|(k, l)| (k.clone(), routes(l)))
                .collect(),
            account_routes: data
                .accounts_routes
                .iter()
                .filter(|(_, l)| !l.is_empty())
                .map(|(k, l)| (k.clone(), routes(l)))
                .collect(),
            dkim: data
                .dkim
                .iter()
                .filter(|(_, l)| !l.is_empty())
                .map(|(d, l)| {
                    let items = l
                        .iter()
                        .map(|k| serde_json::to_string(k).unwrap_or_default())
                        .collect();
                    (d.clone(), items)
                })
                .collect(),
        }
    }
}

fn diff_hash(
    key: String,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    ops: &mut Vec<WriteOp>,
) {
    for (field, value) in new {
        if old.get(field) != Some(value) {
            ops.push(WriteOp::HashSet {
                key: key.clone(),
                field: field.clone(),
                value: value.clone(),
            });
        }
    }
    for field in old.keys() {
        if !new.contains_key(field) {
            ops.push(WriteOp::HashDel {
                key: key.clone(),
                field: field.clone(),
            });
        }
    }
}

fn diff_lists(
    key_of: impl Fn(&str) -> String,
    old: &BTreeMap<String, Vec<String>>,
    new: &BTreeMap<String, Vec<String>>,
    ops: &mut Vec<WriteOp>,
) {
    for (name, items) in new {
        if old.get(name) != Some(items) {
            ops.push(WriteOp::SetList {
                key: key_of(name),
                items: items.clone(),
            });
        }
    }
    for name in old.keys() {
        if !new.contains_key(name) {
            ops.push(WriteOp::SetList {
                key: key_of(name),
                items: Vec::new(),
            });
        }
    }
}

/// The writes that turn the stored `old` into `new` (versions are ignored).
pub fn diff(keys: &Keys, old: &RawStore, new: &RawStore) -> Vec<WriteOp> {
    let mut ops = Vec::new();
    diff_hash(
        keys.transports(),
        &old.transports,
        &new.transports,
        &mut ops,
    );
    diff_hash(keys.accounts(), &old.accounts, &new.accounts, &mut ops);
    if old.global != new.global {
        ops.push(WriteOp::SetList {
            key: keys.global_routes(),
            items: new.global.clone(),
        });
    }
    diff_lists(
        |d| keys.domain_routes(d),
        &old.domains,
        &new.domains,
        &mut ops,
    );
    diff_lists(
        |a| keys.account_routes(a),
        &old.account_routes,
        &new.account_routes,
        &mut ops,
    );
    diff_lists(|d| keys.dkim(d), &old.dkim, &new.dkim, &mut ops);
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_json_keeps_only_what_is_set() {
        let t: TransportConfig = serde_json::from_str(
            r#"{"kind":"submission","host":"smtp.example","port":587,"username":"u"}"#,
        )
        .unwrap();
        assert_eq!(
            transport_json(&t),
            r#"{"host":"smtp.example","kind":"submission","port":587,"username":"u"}"#
        );
        let back: TransportConfig = serde_json::from_str(&transport_json(&t)).unwrap();
        assert_eq!(back.port, Some(587));
    }

    #[test]
    fn decode_reports_bad_json_by_location() {
        let raw = RawStore {
            transports: [("A".to_string(), "{\"kind\":\"nope\"}".to_string())].into(),
            global: vec!["{\"transport\":\"A\"}".into(), "[]".into()],
            domains: [("x.org".to_string(), vec!["{".to_string()])].into(),
            ..Default::default()
        };
        let problems = raw.decode().unwrap_err();
        let text = super::super::data::format_problems(&problems);
        assert!(text.contains("transports[A]"), "{text}");
        assert!(text.contains("routes:global[1]"), "{text}");
        assert!(text.contains("routes:domain:x.org[0]"), "{text}");
    }

    #[test]
    fn diff_touches_only_what_changed() {
        let keys = Keys::new("p:", false);
        let mut data = StoreData::default();
        data.transports.insert(
            "A".into(),
            serde_json::from_str(r#"{"kind":"smtp","host":"a"}"#).unwrap(),
        );
        data.global.push(RouteSpec {
            transport: "A".into(),
            ..Default::default()
        });
        data.domains
            .insert("x.org".into(), vec![RouteSpec::default()]);
        let old = RawStore::encode(&data);
        assert!(diff(&keys, &old, &old).is_empty());
        let decoded = old.decode().unwrap();
        assert_eq!(RawStore::encode(&decoded), old);

        let mut changed = data.clone();
        changed.domains.clear();
        changed
            .accounts_routes
            .insert("app".into(), vec![RouteSpec::default()]);
        let ops = diff(&keys, &old, &RawStore::encode(&changed));
        assert_eq!(
            ops,
            vec![
                WriteOp::SetList {
                    key: "p:routes:domain:x.org".into(),
                    items: vec![]
                },
                WriteOp::SetList {
                    key: "p:routes:account:app".into(),
                    items: vec!["{\"transport\":\"\"}".into()]
                },
            ]
        );
    }
}
