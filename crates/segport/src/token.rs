//! `segport token create|list|revoke`, working directly on the catalog (no server needed).

use anyhow::Context;
use segport_api::auth::issue_token;
use segport_model::time::now_ms;
use segport_model::OrgId;

use crate::cli::TokenCommand;
use crate::config::open_catalog;

pub async fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create { catalog, org, expires_in } => {
            let org = OrgId::parse(&org).map_err(|m| anyhow::anyhow!("--org: {m}"))?;
            let catalog = open_catalog(&catalog, crate::config::TOOL_CONNECTIONS).await?;
            let issued = issue_token(org.as_str(), expires_in);
            catalog.insert_token(&issued.record).await.context("cannot store the token")?;
            eprintln!(
                "token {} for org {} created{}; the secret below is shown only once",
                issued.record.id,
                org,
                issued
                    .record
                    .expires_ms
                    .map(|ms| format!(", expires {}", fmt_ms(ms)))
                    .unwrap_or_default()
            );
            println!("{}", issued.secret);
        }
        TokenCommand::List { catalog } => {
            let catalog = open_catalog(&catalog, crate::config::TOOL_CONNECTIONS).await?;
            let tokens = catalog.list_tokens().await.context("cannot list tokens")?;
            println!("{:<22} {:<40} {:<22} {:<22} state", "id", "org", "created", "expires");
            let now = now_ms();
            for t in tokens {
                let state = match (t.revoked_ms, t.expires_ms) {
                    (Some(_), _) => "revoked",
                    (None, Some(e)) if e <= now => "expired",
                    _ => "active",
                };
                println!(
                    "{:<22} {:<40} {:<22} {:<22} {state}",
                    t.id,
                    t.org,
                    fmt_ms(t.created_ms),
                    t.expires_ms.map(fmt_ms).unwrap_or_else(|| "never".to_owned()),
                );
            }
        }
        TokenCommand::Revoke { catalog, id } => {
            let catalog = open_catalog(&catalog, crate::config::TOOL_CONNECTIONS).await?;
            let revoked = catalog.revoke_token(&id, now_ms()).await.context("cannot revoke")?;
            anyhow::ensure!(revoked, "no active token with id {id:?}");
            eprintln!("token {id} revoked (servers stop accepting it within 5 seconds)");
        }
    }
    Ok(())
}

fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}
