//! PostgreSQL tests run when `TRIBUTARY_TEST_POSTGRES_URL` is set; otherwise they are reported as
//! ignored, with the reason, in the test output.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(postgres_tests)");
    println!("cargo::rerun-if-env-changed=TRIBUTARY_TEST_POSTGRES_URL");
    if std::env::var_os("TRIBUTARY_TEST_POSTGRES_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=postgres_tests");
    }
}
