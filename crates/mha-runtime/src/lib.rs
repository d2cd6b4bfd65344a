//! mha-runtime
