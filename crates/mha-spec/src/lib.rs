//! mha-spec
