//! What the store's integration tests share: the S3-compatible test server.

#![allow(dead_code)]

/// A secret key the tests hand the S3 client, which must never show in a message.
pub const SECRET: &str = "test-secret-not-to-be-printed";

/// The S3-compatible test server's endpoint.
pub fn endpoint() -> String {
    std::env::var("SEGPORT_TEST_S3_ENDPOINT").expect(
        "SEGPORT_TEST_S3_ENDPOINT: the S3-compatible test server (scripts/test starts one); \
         the S3 tests are never skipped",
    )
}

/// The `AWS_*` settings of the test server, plus one that is not an `AWS_` key.
pub fn s3_settings(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        // Not an AWS_ key: ignored.
        ("SEGPORT_SOMETHING", "x"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A fresh, empty prefix of the test bucket.
pub fn s3_root() -> segport_store::Storage {
    let url = format!("s3://segport-test/run-{}", segport_model::ids::new_uuid().simple());
    segport_store::Storage::from_url_with(&url, s3_settings(&endpoint())).expect("s3 root")
}
