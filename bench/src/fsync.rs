//! The physical floor: how long this disk takes to make a small write durable.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FsyncFloor {
    pub dir: String,
    pub samples: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

/// `samples` times: overwrite a 4 KiB block of a preallocated file in `dir`, then
/// `fdatasync` — what a write-ahead log does per commit (ZooKeeper and etcd preallocate their
/// logs too). Only the sync is timed.
pub fn measure(dir: &Path, samples: usize) -> std::io::Result<FsyncFloor> {
    let samples = samples.max(1);
    let path = dir.join("fsync-probe.bin");
    let mut f = File::create(&path)?;
    let block = [0x5au8; 4096];
    for _ in 0..samples {
        f.write_all(&block)?;
    }
    f.sync_all()?;
    let mut lat = Vec::with_capacity(samples);
    for i in 0..samples {
        f.seek(SeekFrom::Start((i * block.len()) as u64))?;
        f.write_all(&block)?;
        let t = Instant::now();
        f.sync_data()?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    lat.sort_by(f64::total_cmp);
    let q = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    Ok(FsyncFloor {
        dir: dir.display().to_string(),
        samples,
        p50_ms: q(0.50),
        p90_ms: q(0.90),
        p99_ms: q(0.99),
    })
}
