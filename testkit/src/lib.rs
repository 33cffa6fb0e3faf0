//! Test and demo harness for pushwake. Placeholder; filled in below.
pub mod apns;
pub mod keys;
