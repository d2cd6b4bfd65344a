//! mha-gen
