//! The refresh dispatcher looks for active connections whose access token expires soon; with a
//! million connections that must be an index range scan, not a table scan.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Connections {
    Table,
    TokenExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("ix_connections_token_expires_at")
                    .table(Connections::Table)
                    .col(Connections::TokenExpiresAt)
                    .to_owned(),
            )
            .await
    }
}
