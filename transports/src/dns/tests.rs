//! Tests of the DNS layer against the in-process test server.
