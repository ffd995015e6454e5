//! Face-count latency per snapshot, on one thread: `cargo bench --bench vision`.
//!
//! The figures behind `models/MODELS.md`'s latency table and the default input size. A
//! terminal-sized JPEG (640×480, ~23 KB, one face) goes through each stage on its own and then
//! the whole path the vision worker runs (decode, letterbox, inference, decoding, NMS), at the
//! default input size and at the wider room-camera size. Plain `fn main` (no harness): a table
//! of median and p99 over `RUNS` runs after `WARM_UP` untimed ones.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use hallgate::vision::letterbox::letterbox;
use hallgate::vision::{DetectorConfig, FaceDetector, SnapshotLimits, decode_snapshot};

const RUNS: usize = 200;
const WARM_UP: usize = 5;
const SNAPSHOT: &str = "tests/fixtures/images/astronaut_640x480.jpg";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo test --all-targets` runs bench targets too, unoptimised: figures from that would
    // mean nothing and take many minutes. `cargo bench` passes `--bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("vision bench: skipped (run it with `cargo bench --bench vision`)");
        return Ok(());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let jpeg = std::fs::read(root.join(SNAPSHOT))?;
    let limits = SnapshotLimits::default();
    let image = decode_snapshot(&jpeg, &limits)?;
    println!(
        "snapshot: {SNAPSHOT} ({}x{}, {} bytes); {RUNS} runs, one thread",
        image.width(),
        image.height(),
        jpeg.len()
    );
    println!("{:<42} {:>10} {:>10}", "stage", "median ms", "p99 ms");

    row("decode jpeg only", || {
        black_box(decode_snapshot(black_box(&jpeg), &limits).map(|i| i.width()))
    });
    for (width, height) in [(320, 256), (640, 384)] {
        let config = DetectorConfig {
            input_width_px: width,
            input_height_px: height,
            ..DetectorConfig::default()
        };
        let started = Instant::now();
        let detector = FaceDetector::load(root.join("models/centerface.onnx"), config)?;
        println!(
            "{:<42} {:>10.1} {:>10}",
            format!("load + optimise model at {width}x{height} (once)"),
            millis(started.elapsed()),
            "-"
        );
        row(&format!("letterbox to {width}x{height}"), || {
            black_box(letterbox(black_box(&image), width, height).scale)
        });
        let faces = detector.detect_snapshot(&jpeg, &limits)?;
        assert_eq!(faces.len(), 1, "the bench snapshot shows one face");
        row(
            &format!("face count at {width}x{height} (whole path)"),
            || {
                black_box(
                    detector
                        .detect_snapshot(black_box(&jpeg), &limits)
                        .map(|f| f.len()),
                )
            },
        );
    }
    Ok(())
}

fn row<R>(label: &str, mut run: impl FnMut() -> R) {
    for _ in 0..WARM_UP {
        black_box(run());
    }
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            black_box(run());
            started.elapsed()
        })
        .collect();
    times.sort_unstable();
    let median = times[RUNS / 2];
    let p99 = times[(RUNS * 99).div_ceil(100) - 1];
    println!("{label:<42} {:>10.2} {:>10.2}", millis(median), millis(p99));
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
