//! API tokens.

use super::*;

suite!(tokens);

async fn tokens(backend: Backend) {
    let db = TestCatalog::new(backend).await;
    let rec = TokenRecord {
        id: "tok1".into(),
        org: "org".into(),
        token_sha256: "ab".repeat(32),
        created_ms: 1,
        expires_ms: Some(99),
        revoked_ms: None,
    };
    db.catalog.insert_token(&rec).await.unwrap();
    assert_eq!(db.catalog.find_token(&rec.token_sha256).await.unwrap(), Some(rec.clone()));
    assert_eq!(db.catalog.list_tokens().await.unwrap(), vec![rec.clone()]);
    assert!(db.catalog.revoke_token("tok1", 50).await.unwrap());
    assert!(!db.catalog.revoke_token("tok1", 60).await.unwrap());
    assert_eq!(
        db.catalog.find_token(&rec.token_sha256).await.unwrap().unwrap().revoked_ms,
        Some(50)
    );
    assert!(db.catalog.find_token(&"cd".repeat(32)).await.unwrap().is_none());
}
