//! Database migrations, run at start-up and by `tributary migrate`. Running them twice is a no-op
//! (sea-orm-migration records applied migrations in `seaql_migrations`).
//!
//! # Layout
//! One file per migration, named `mYYYYMMDD_NNNNNN_verb_noun.rs`; never edit a landed migration,
//! add a new one.

// async_trait (required by MigrationTrait) cannot take the `<'_>` the 2018 idioms lint asks for.
#![allow(elided_lifetimes_in_paths)]

pub use sea_orm_migration::prelude::*;

mod m20261125_000001_create_connections;
mod m20261125_000002_create_data_records;
mod m20261125_000003_index_token_expiry;
mod m20261125_000004_add_records_skipped;
mod m20261201_000005_separate_refresh_bookkeeping;
mod m20261201_000006_fold_operator_alerts;
mod m20261201_000007_record_skips_and_rereads;
mod m20261201_000008_create_invitations_and_outbox;
mod m20261202_000009_create_step_runs;
mod m20261202_000010_create_pauses;
mod m20261202_000011_index_ops_filters;
mod m20261202_000012_create_partner_breakers;
mod m20261202_000013_create_bulk_plans;
mod m20261203_000014_add_fetched_from;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_create_connections::Migration),
            Box::new(m20261125_000002_create_data_records::Migration),
            Box::new(m20261125_000003_index_token_expiry::Migration),
            Box::new(m20261125_000004_add_records_skipped::Migration),
            Box::new(m20261201_000005_separate_refresh_bookkeeping::Migration),
            Box::new(m20261201_000006_fold_operator_alerts::Migration),
            Box::new(m20261201_000007_record_skips_and_rereads::Migration),
            Box::new(m20261201_000008_create_invitations_and_outbox::Migration),
            Box::new(m20261202_000009_create_step_runs::Migration),
            Box::new(m20261202_000010_create_pauses::Migration),
            Box::new(m20261202_000011_index_ops_filters::Migration),
            Box::new(m20261202_000012_create_partner_breakers::Migration),
            Box::new(m20261202_000013_create_bulk_plans::Migration),
            Box::new(m20261203_000014_add_fetched_from::Migration),
        ]
    }
}
