//! Settings shared by the property-based tests of every parser that reads network input.
//!
//! Each property runs [`MIN_CASES`] generated inputs in CI. A longer campaign raises the count
//! with `P2PCAMERA_PROPTEST_CASES`, e.g.
//! `P2PCAMERA_PROPTEST_CASES=1000000 cargo test --workspace --release -- properties`.

use proptest::test_runner::Config;

/// Generated cases per property in a normal test run.
pub const MIN_CASES: u32 = 10_000;

/// The proptest configuration every network-input property uses: at least [`MIN_CASES`] cases,
/// more when `P2PCAMERA_PROPTEST_CASES` asks for more; shrinking stays on so a failure reports
/// the smallest input.
pub fn config() -> Config {
    let cases = std::env::var("P2PCAMERA_PROPTEST_CASES")
        .ok()
        .and_then(|text| text.parse::<u32>().ok())
        .map_or(MIN_CASES, |asked| asked.max(MIN_CASES));
    Config {
        cases,
        // Failures are reported in the test output; no regression files are written into the
        // source tree from CI.
        failure_persistence: None,
        ..Config::default()
    }
}
