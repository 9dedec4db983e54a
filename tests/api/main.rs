//! Behaviour of the server through its public HTTP surface and its command line.

// Test code: a failed expectation is meant to stop the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod access;
mod access_report;
mod audit_page;
mod audit_trail;
mod bundles;
mod cli;
mod export;
mod fuzz;
mod helpers;
mod hostile;
mod identity;
mod jwks;
mod lifecycle;
mod load;
mod lookup;
mod national;
mod notify;
mod operate;
mod operations;
mod postgres;
mod replicas;
mod resources;
mod robustness;
mod searching;
mod tls;
mod validation;
mod versioning;
