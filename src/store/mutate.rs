//! Changes to a store as data: a [`Mutation`] applied to a [`StoreData`] gives the new
//! data, which is then validated as a whole before anything is written. Pure code: the
//! Redis writes are computed afterwards by diffing the stored forms.

use super::data::{RouteList, RouteSpec, StoreData};
use crate::accounts::AccountRecord;
use crate::config::TransportConfig;

/// One change requested by the CLI.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Insert a route at `index` (default: the end).
    AddRoute {
        list: RouteList,
        index: Option<usize>,
        route: RouteSpec,
    },
    /// Remove the route at `index`.
    RemoveRoute {
        list: RouteList,
        index: usize,
    },
    /// Create or replace a transport.
    SetTransport {
        name: String,
        transport: Box<TransportConfig>,
    },
    RemoveTransport {
        name: String,
    },
    /// Create or replace an account's credentials.
    SetAccount {
        name: String,
        record: AccountRecord,
    },
    RemoveAccount {
        name: String,
    },
    /// Replace everything (import).
    Replace(Box<StoreData>),
}

/// Why a change does not apply to the store as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MutationError {
    #[error("{list} has {len} route(s): index {index} is past its end")]
    IndexPastEnd {
        list: String,
        len: usize,
        index: usize,
    },
    #[error("{list} has {len} route(s): there is no index {index}")]
    NoSuchIndex {
        list: String,
        len: usize,
        index: usize,
    },
    #[error("there is no transport {0:?}")]
    NoSuchTransport(String),
    #[error("there is no account {0:?}")]
    NoSuchAccount(String),
}

impl Mutation {
    /// Removals work on the stored form, so they also take out entries that do not
    /// decode (repairing a store gateways refuse); other changes return `None`.
    pub fn raw_edit(
        &self,
        raw: &super::raw::RawStore,
    ) -> Option<Result<super::raw::RawStore, MutationError>> {
        let mut new = raw.clone();
        let result = match self {
            Mutation::RemoveRoute { list, index } => match new.list_mut(list) {
                Some(items) if *index < items.len() => {
                    items.remove(*index);
                    Ok(())
                }
                found => Err(MutationError::NoSuchIndex {
                    list: list.to_string(),
                    len: found.map_or(0, |i| i.len()),
                    index: *index,
                }),
            },
            Mutation::RemoveTransport { name } => match new.transports.remove(name) {
                Some(_) => Ok(()),
                None => Err(MutationError::NoSuchTransport(name.clone())),
            },
            Mutation::RemoveAccount { name } => match new.accounts.remove(name) {
                Some(_) => Ok(()),
                None => Err(MutationError::NoSuchAccount(name.clone())),
            },
            _ => return None,
        };
        Some(result.map(|()| new))
    }

    /// The new data; an error when the change does not apply (no such index, name).
    pub fn apply(&self, current: &StoreData) -> Result<StoreData, MutationError> {
        let mut data = current.clone();
        match self {
            Mutation::AddRoute { list, index, route } => {
                let routes = data.list_mut(list);
                let at = index.unwrap_or(routes.len());
                if at > routes.len() {
                    return Err(MutationError::IndexPastEnd {
                        list: list.to_string(),
                        len: routes.len(),
                        index: at,
                    });
                }
                routes.insert(at, route.clone());
            }
            Mutation::RemoveRoute { list, index } => {
                let routes = data.list_mut(list);
                if *index >= routes.len() {
                    return Err(MutationError::NoSuchIndex {
                        list: list.to_string(),
                        len: routes.len(),
                        index: *index,
                    });
                }
                routes.remove(*index);
            }
            Mutation::SetTransport { name, transport } => {
                data.transports.insert(name.clone(), (**transport).clone());
            }
            Mutation::RemoveTransport { name } => {
                if data.transports.remove(name).is_none() {
                    return Err(MutationError::NoSuchTransport(name.clone()));
                }
            }
            Mutation::SetAccount { name, record } => {
                data.accounts.insert(name.clone(), record.clone());
            }
            Mutation::RemoveAccount { name } => {
                if data.accounts.remove(name).is_none() {
                    return Err(MutationError::NoSuchAccount(name.clone()));
                }
            }
            Mutation::Replace(new) => data = (**new).clone(),
        }
        data.prune_empty_lists();
        Ok(data)
    }

    /// Whether the mutation needs the current data to be readable (a replacement
    /// does not, so `import` can repair a store holding bad JSON).
    pub fn needs_current(&self) -> bool {
        !matches!(self, Mutation::Replace(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(t: &str) -> RouteSpec {
        RouteSpec {
            transport: t.into(),
            ..Default::default()
        }
    }

    #[test]
    fn add_and_remove_routes() {
        let d = StoreData::default();
        let list = RouteList::Domain("x.org".into());
        let d = Mutation::AddRoute {
            list: list.clone(),
            index: None,
            route: r("a"),
        }
        .apply(&d)
        .unwrap();
        let d = Mutation::AddRoute {
            list: list.clone(),
            index: Some(0),
            route: r("b"),
        }
        .apply(&d)
        .unwrap();
        assert_eq!(d.list(&list), &[r("b"), r("a")]);
        let err = Mutation::AddRoute {
            list: list.clone(),
            index: Some(5),
            route: r("c"),
        }
        .apply(&d)
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("routes:domain:x.org has 2 route(s)"),
            "{err}"
        );
        let d = Mutation::RemoveRoute {
            list: list.clone(),
            index: 1,
        }
        .apply(&d)
        .unwrap();
        let d = Mutation::RemoveRoute {
            list: list.clone(),
            index: 0,
        }
        .apply(&d)
        .unwrap();
        assert!(d.domains.is_empty(), "an emptied list disappears");
        assert!(Mutation::RemoveRoute { list, index: 0 }.apply(&d).is_err());
        assert!(Mutation::RemoveTransport { name: "x".into() }
            .apply(&d)
            .is_err());
    }
}
