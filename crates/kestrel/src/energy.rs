//! Energy per frame: an estimate from the counted work, and a measurement from Linux powercap
//! (RAPL) when the machine exposes it. The two are always labelled as such.

use serde::Serialize;

/// Per-operation energy constants of a device class.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EnergyModel {
    pub name: String,
    /// Energy of one f32 multiply-accumulate, picojoules.
    pub pj_per_mac: f64,
    /// Energy of moving one byte to or from DRAM, picojoules.
    pub pj_per_dram_byte: f64,
    pub source: String,
}

impl EnergyModel {
    /// The built-in device class: M. Horowitz, "Computing's energy problem (and what we can do
    /// about it)", ISSCC 2014, 45 nm figures: f32 multiply 3.7 pJ + f32 add 0.9 pJ = 4.6 pJ per
    /// MAC; a 32-bit DRAM access 640 pJ = 160 pJ per byte (the table reused by Han et al., EIE,
    /// ISCA 2016).
    pub fn horowitz_45nm() -> Self {
        EnergyModel {
            name: "horowitz-45nm".into(),
            pj_per_mac: 4.6,
            pj_per_dram_byte: 160.0,
            source: "Horowitz, ISSCC 2014 (45 nm): fp32 mult 3.7 pJ + add 0.9 pJ; 32-bit DRAM access 640 pJ".into(),
        }
    }

    /// User-supplied constants.
    pub fn custom(pj_per_mac: f64, pj_per_dram_byte: f64) -> Self {
        EnergyModel {
            name: "custom".into(),
            pj_per_mac,
            pj_per_dram_byte,
            source: "given on the command line".into(),
        }
    }
}

/// Energy figures of one frame.
#[derive(Clone, Debug, Serialize)]
pub struct EnergyReport {
    pub model: EnergyModel,
    /// Estimated compute energy, millijoules per frame.
    pub estimated_compute_mj: f64,
    /// Estimated DRAM-traffic energy, millijoules per frame (traffic from the cost model).
    pub estimated_dram_mj: f64,
    pub estimated_total_mj: f64,
    /// Measured package energy per frame from RAPL, millijoules, when available.
    pub measured_package_mj: Option<f64>,
    /// Why there is no measurement, or which counters were read.
    pub measured_note: String,
}

impl EnergyReport {
    pub fn estimate(model: EnergyModel, macs: u64, dram_bytes: u64) -> Self {
        let c = macs as f64 * model.pj_per_mac * 1e-9;
        let d = dram_bytes as f64 * model.pj_per_dram_byte * 1e-9;
        EnergyReport {
            model,
            estimated_compute_mj: c,
            estimated_dram_mj: d,
            estimated_total_mj: c + d,
            measured_package_mj: None,
            measured_note: String::new(),
        }
    }
}

/// Linux powercap package-energy counters (`/sys/class/powercap/intel-rapl:N`).
pub struct Rapl {
    domains: Vec<(std::path::PathBuf, u64)>, // (energy_uj path, max range)
}

impl Rapl {
    /// The package domains, or a reason why none can be read.
    pub fn open() -> Result<Rapl, String> {
        let base = std::path::Path::new("/sys/class/powercap");
        let entries = std::fs::read_dir(base)
            .map_err(|_| "no /sys/class/powercap on this machine".to_string())?;
        let mut domains = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // top-level package domains are intel-rapl:N (sub-domains have a second colon)
            if name.starts_with("intel-rapl:") && name.matches(':').count() == 1 {
                let p = e.path().join("energy_uj");
                let max = std::fs::read_to_string(e.path().join("max_energy_range_uj"))
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(u64::MAX);
                if std::fs::read_to_string(&p).is_ok() {
                    domains.push((p, max));
                }
            }
        }
        if domains.is_empty() {
            return Err("no readable RAPL package counters (needs /sys/class/powercap/intel-rapl:N/energy_uj, often root-only)".into());
        }
        Ok(Rapl { domains })
    }

    /// Current counter values, microjoules.
    pub fn read(&self) -> Vec<u64> {
        self.domains
            .iter()
            .map(|(p, _)| {
                std::fs::read_to_string(p)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    }

    /// Joules between two readings, handling counter wrap-around.
    pub fn joules_between(&self, a: &[u64], b: &[u64]) -> f64 {
        self.domains
            .iter()
            .zip(a.iter().zip(b))
            .map(|((_, max), (&x, &y))| if y >= x { y - x } else { max - x + y } as f64 * 1e-6)
            .sum()
    }
}
