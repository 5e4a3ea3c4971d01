//! Server configuration from flags and environment variables (flags win).

use std::net::IpAddr;

use clap::Parser;

/// ferrosoup: a mediasoup-compatible SFU. Runs with no configuration: open
/// http://localhost:3000 and connect WebSocket clients to ws://localhost:3000/ws.
#[derive(Clone, Debug, Parser)]
#[command(name = "ferrosoup", version, about)]
pub struct Config {
    /// HTTP and WebSocket port.
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,
    /// Address the HTTP server and the RTC sockets bind to.
    #[arg(long, env = "LISTEN_IP", default_value = "0.0.0.0")]
    pub listen_ip: IpAddr,
    /// Public address(es) put in ICE candidates (comma-separated). Default: the host's
    /// primary IPv4 address and 127.0.0.1 when listening on all interfaces.
    #[arg(long, env = "ANNOUNCED_IP", value_delimiter = ',')]
    pub announced_ip: Vec<IpAddr>,
    /// First UDP port for worker sockets.
    #[arg(long, env = "RTC_MIN_PORT", default_value_t = 40000)]
    pub rtc_min_port: u16,
    /// Last UDP port for worker sockets.
    #[arg(long, env = "RTC_MAX_PORT", default_value_t = 40099)]
    pub rtc_max_port: u16,
    /// Number of worker threads (default: number of cores).
    #[arg(long, env = "NUM_WORKERS")]
    pub num_workers: Option<usize>,
    /// JSON file with the routers' media codecs (an array of mediasoup `RtpCodecCapability`).
    /// Default: opus, VP8, VP9 profile 0, H264 42e01f, each video codec with RTX.
    #[arg(long, env = "MEDIA_CODECS")]
    pub media_codecs: Option<std::path::PathBuf>,
}

impl Config {
    /// Checks relations between settings.
    pub fn validate(&self) -> Result<(), String> {
        if self.rtc_min_port > self.rtc_max_port {
            return Err(format!(
                "RTC_MIN_PORT {} > RTC_MAX_PORT {}",
                self.rtc_min_port, self.rtc_max_port
            ));
        }
        if self.num_workers == Some(0) {
            return Err("NUM_WORKERS must be at least 1".into());
        }
        let workers = self.num_workers.unwrap_or(1);
        let ports = usize::from(self.rtc_max_port - self.rtc_min_port) + 1;
        if workers > ports {
            return Err(format!(
                "{workers} workers need {workers} ports; the RTC port range has {ports}"
            ));
        }
        Ok(())
    }

    /// The routers' media codecs: from the file, or the defaults. Checked by computing the
    /// router capabilities once.
    pub fn media_codecs(
        &self,
    ) -> Result<Vec<ferrosoup_proto::rtp_parameters::RtpCodecCapability>, String> {
        let codecs = match &self.media_codecs {
            None => ferrosoup_proto::ortc::default_media_codecs(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("MEDIA_CODECS {}: {e}", path.display()))?;
                serde_json::from_str(&text)
                    .map_err(|e| format!("MEDIA_CODECS {}: {e}", path.display()))?
            }
        };
        ferrosoup_proto::ortc::generate_router_rtp_capabilities(&codecs)
            .map_err(|e| format!("media codecs: {e}"))?;
        Ok(codecs)
    }

    /// The worker pool settings.
    pub fn worker_settings(&self) -> ferrosoup_room::WorkerSettings {
        let defaults = ferrosoup_room::WorkerSettings::default();
        ferrosoup_room::WorkerSettings {
            num_workers: self.num_workers.unwrap_or(defaults.num_workers),
            listen_ip: self.listen_ip,
            announced_ips: self.announced_ip.clone(),
            rtc_min_port: self.rtc_min_port,
            rtc_max_port: self.rtc_max_port,
        }
    }
}
