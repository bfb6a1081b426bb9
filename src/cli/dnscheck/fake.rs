//! A table-driven [`Resolver`] for the unit tests of the checks: answers come from a map
//! of (name, type) to records or an error; other types of a known name are NODATA,
//! unknown names NXDOMAIN.

use std::collections::HashMap;
use std::net::IpAddr;

use relaygate_transports::dns::{
    normalize_name, reverse_name, Answer, DnsError, LookupFuture, Mx, QueryType, Record, Resolver,
    Tlsa,
};

#[derive(Default)]
pub struct FakeDns {
    answers: HashMap<(String, QueryType), Result<Answer<Record>, DnsError>>,
}

impl FakeDns {
    pub fn add(&mut self, name: &str, record: Record, authentic: bool) -> &mut Self {
        let key = (normalize_name(name), record.query_type());
        let entry = self.answers.entry(key).or_insert_with(|| {
            Ok(Answer {
                authentic,
                records: Vec::new(),
            })
        });
        if let Ok(answer) = entry {
            answer.records.push(record);
        }
        self
    }

    pub fn a(&mut self, name: &str, ip: &str) -> &mut Self {
        match ip.parse::<IpAddr>().unwrap() {
            IpAddr::V4(v4) => self.add(name, Record::A(v4), false),
            IpAddr::V6(v6) => self.add(name, Record::Aaaa(v6), false),
        }
    }

    pub fn ptr(&mut self, ip: &str, target: &str) -> &mut Self {
        let name = reverse_name(ip.parse().unwrap());
        self.add(&name, Record::Ptr(target.into()), false)
    }

    pub fn mx(&mut self, name: &str, preference: u16, exchange: &str) -> &mut Self {
        let mx = Mx {
            preference,
            exchange: exchange.into(),
        };
        self.add(name, Record::Mx(mx), false)
    }

    pub fn txt(&mut self, name: &str, text: &str) -> &mut Self {
        self.add(name, Record::Txt(text.into()), false)
    }

    pub fn tlsa(&mut self, name: &str, authentic: bool) -> &mut Self {
        let tlsa = Tlsa {
            usage: 3,
            selector: 1,
            matching_type: 1,
            data: vec![0; 32],
        };
        self.add(name, Record::Tlsa(tlsa), authentic)
    }

    pub fn fail(&mut self, name: &str, qtype: QueryType) -> &mut Self {
        let e = DnsError::ServFail {
            name: normalize_name(name),
            qtype,
        };
        self.answers.insert((normalize_name(name), qtype), Err(e));
        self
    }
}

impl Resolver for FakeDns {
    fn lookup<'a>(&'a self, name: &'a str, qtype: QueryType) -> LookupFuture<'a, Record> {
        let name = normalize_name(name);
        let result = match self.answers.get(&(name.clone(), qtype)) {
            Some(r) => r.clone(),
            // The name has other records: NODATA; else NXDOMAIN.
            None if self.answers.keys().any(|(n, _)| *n == name) => Err(DnsError::NoData {
                name,
                qtype,
                authentic: false,
            }),
            None => Err(DnsError::NxDomain {
                name,
                qtype,
                authentic: false,
            }),
        };
        Box::pin(async move { result })
    }
}

/// Runs a future to completion on a fresh current-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
