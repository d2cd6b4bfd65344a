//! Helpers the integration tests share.

/// A rayon pool of `threads` threads (built once per size).
pub fn pool(threads: usize) -> &'static rayon::ThreadPool {
    static POOLS: std::sync::OnceLock<Vec<rayon::ThreadPool>> = std::sync::OnceLock::new();
    let pools = POOLS.get_or_init(|| {
        [1, 3, 8]
            .into_iter()
            .map(|n| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .unwrap()
            })
            .collect()
    });
    pools
        .iter()
        .find(|p| p.current_num_threads() == threads)
        .expect("a pool of 1, 3 or 8 threads")
}
