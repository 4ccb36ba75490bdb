//! Builds (or finds cached) the guest image and prints where it is:
//! `cargo run --release -p tests --bin build-guest`.

fn main() {
    let started = std::time::Instant::now();
    let image = tests::GuestImage::get();
    println!(
        "kernel {} ({})\ninitrd {}\nready in {:.1} s",
        image.kernel.display(),
        image.kernel_release,
        image.initrd.display(),
        started.elapsed().as_secs_f64()
    );
}
