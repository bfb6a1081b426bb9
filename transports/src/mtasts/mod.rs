//! MTA-STS (placeholder)
