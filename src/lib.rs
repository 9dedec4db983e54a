//! cpis-fhir: a FHIR R4 server doing the job of England's Child Protection – Information Sharing
//! (CP-IS) service. A FHIR facade over a small domain schema (see DESIGN.md): councils submit
//! Patients and Flags; clinicians look children up by NHS number; every look-up is audited.

pub mod api;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod demo;
pub mod domain;
pub mod error;
pub mod fhir;
pub mod fuzz;
pub mod lane;
pub mod limits;
pub mod load;
pub mod metrics;
pub mod middleware;
pub mod nhs_number;
pub mod notify;
pub mod records;
pub mod startup;
pub mod state;
pub mod store;
pub mod tasks;
pub mod tls;
