//! Serde representations of foreign types in the parameter records: a `tch::Device` as text,
//! an optional `Duration` as seconds.

/// `tch::Device` as `"cpu"`, `"cuda:N"`, `"mps"` or `"vulkan"` (`"cuda"` reads as `"cuda:0"`).
pub(crate) mod device {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};
    use tch::Device;

    pub(crate) fn serialize<S: Serializer>(device: &Device, s: S) -> Result<S::Ok, S::Error> {
        match device {
            Device::Cpu => s.serialize_str("cpu"),
            Device::Cuda(i) => s.serialize_str(&format!("cuda:{i}")),
            Device::Mps => s.serialize_str("mps"),
            Device::Vulkan => s.serialize_str("vulkan"),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Device, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            "mps" => Ok(Device::Mps),
            "vulkan" => Ok(Device::Vulkan),
            t => t
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| {
                    D::Error::custom(format!(
                        "device {t:?}: use \"cpu\", \"cuda:N\", \"mps\" or \"vulkan\""
                    ))
                }),
        }
    }
}

/// `Option<Duration>` as optional seconds (a float); negative, non-finite or huge values are
/// errors, never panics.
pub(crate) mod opt_seconds {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|s| {
                Duration::try_from_secs_f64(s)
                    .map_err(|e| D::Error::custom(format!("a duration of {s} seconds: {e}")))
            })
            .transpose()
    }
}
