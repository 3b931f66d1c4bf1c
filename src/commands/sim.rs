//! `turnbench sim`: the profile (by name under `--config-dir`, or a path) with the flags on top,
//! then the simulator serves until a signal.

use anyhow::Result;

use crate::cli::{SimArgs, SimRouting};
use crate::sim::{Profile, Routing, SimConfig};

pub async fn sim(args: SimArgs) -> Result<()> {
    crate::sim::serve(sim_config(&args)?).await
}

/// The simulator's settings for `args`: profile, then flags, validated.
pub fn sim_config(args: &SimArgs) -> Result<SimConfig> {
    let flags = Profile {
        model_name: args.model_name.clone(),
        block_size: args.block_size,
        kv_cache_blocks: args.kv_cache_blocks,
        max_num_seqs: args.max_num_seqs,
        max_waiting: args.max_waiting,
        max_model_len: args.max_model_len,
        enable_prefix_caching: args.no_prefix_caching.then_some(false),
        default_max_tokens: args.default_max_tokens,
        overhead_ms: args.overhead_ms,
        prefill_ms_per_token: args.prefill_ms_per_token,
        inter_token_ms: args.inter_token_ms,
        load_slowdown: args.load_slowdown,
        fail_rate: args.fail_rate,
        drop_rate: args.drop_rate,
        retokenize_drift: args.retokenize_drift,
        seed: args.seed,
        replicas: args.replicas,
        routing: args.routing.map(|r| match r {
            SimRouting::RoundRobin => Routing::RoundRobin,
            SimRouting::PrefixAffinity => Routing::PrefixAffinity,
            SimRouting::Random => Routing::Random,
        }),
    };
    let (mut config, _) = SimConfig::resolve(&args.config_dir, args.profile.as_deref(), &flags)?;
    config.host = args.host.clone();
    config.port = args.port;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> SimArgs {
        let mut v = vec!["turnbench", "sim"];
        v.extend_from_slice(extra);
        match crate::cli::Cli::parse_from(v).command {
            crate::cli::Command::Sim(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn default_profile_is_the_default_config() {
        let d = sim_config(&args(&["--config-dir", "/nonexistent"])).unwrap();
        assert_eq!(d, SimConfig { port: 8000, ..SimConfig::default() });
    }

    #[test]
    fn flags_override_profile() {
        let c = sim_config(&args(&["--profile", "instant", "--block-size", "32", "--no-prefix-caching", "--model-name", "m"]))
            .unwrap();
        assert_eq!(c.block_size, 32);
        assert!(!c.enable_prefix_caching);
        assert_eq!(c.model_name, "m");
        assert_eq!(c.latency.inter_token_ms, 0.0);
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mine.toml");
        std::fs::write(&p, "block_size = 32\nturbo = true\n").unwrap();
        let err = sim_config(&args(&["--profile", p.to_str().unwrap()])).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("mine.toml") && msg.contains("turbo"), "{msg}");
        assert_eq!(crate::core::error::exit_code(&err), 2);
        let err = sim_config(&args(&["--profile", "nope"])).unwrap_err();
        assert!(format!("{err}").contains("instant"));
        assert_eq!(crate::core::error::exit_code(&err), 2);
        let err = sim_config(&args(&["--fail-rate", "1.5"])).unwrap_err();
        assert_eq!(crate::core::error::exit_code(&err), 2);
    }

    #[test]
    fn replicas_and_routing_from_flags_and_profiles() {
        let d = sim_config(&args(&[])).unwrap();
        assert_eq!((d.replicas, d.routing), (1, Routing::RoundRobin));
        let c = sim_config(&args(&["--replicas", "4", "--routing", "prefix-affinity"])).unwrap();
        assert_eq!((c.replicas, c.routing), (4, Routing::PrefixAffinity));
        for n in ["0", "65"] {
            let err = sim_config(&args(&["--replicas", n])).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(&format!("replicas = {n}")) && msg.contains("between 1 and 64"), "{msg}");
            assert_eq!(crate::core::error::exit_code(&err), 2);
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cluster.toml");
        std::fs::write(&p, "replicas = 3\nrouting = \"random\"\n").unwrap();
        let c = sim_config(&args(&["--profile", p.to_str().unwrap()])).unwrap();
        assert_eq!((c.replicas, c.routing), (3, Routing::Random));
        let c = sim_config(&args(&["--profile", p.to_str().unwrap(), "--routing", "round-robin"])).unwrap();
        assert_eq!((c.replicas, c.routing), (3, Routing::RoundRobin));
        std::fs::write(&p, "routing = \"sticky\"\n").unwrap();
        let err = sim_config(&args(&["--profile", p.to_str().unwrap()])).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("cluster.toml") && msg.contains("sticky"), "{msg}");
        assert_eq!(crate::core::error::exit_code(&err), 2);
    }
}
