//! Writes an OCI image layout for `skopeo copy oci:DIR:TAG ...` (demo and benchmark images).

use std::path::PathBuf;

use clap::Parser;
use integration_tests::oci_layout::{Spec, write};

#[derive(Debug, Parser)]
struct Args {
    /// The layout directory (created).
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value = "latest")]
    tag: String,
    /// Comma-separated os/arch pairs.
    #[arg(long, default_value = "linux/amd64")]
    platforms: String,
    /// Number of layers per platform.
    #[arg(long, default_value_t = 1)]
    layers: usize,
    /// Size of each layer in MiB.
    #[arg(long, default_value_t = 1)]
    layer_mib: u64,
    /// Add an attestation manifest.
    #[arg(long)]
    attestation: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let spec = Spec {
        platforms: args.platforms.split(',').map(str::to_owned).collect(),
        layers: vec![args.layer_mib << 20; args.layers],
        attestation: args.attestation,
        seed: args.seed,
    };
    let layout = write(&args.dir, &args.tag, &spec)?;
    println!("{}", layout.digest);
    Ok(())
}
