//! `virtual-piv`: one virtual PIV smartcard for tests.
//!
//! The card is Nitrokey's `piv-authenticator` running on a software Trussed platform whose
//! storage lives in files under a state directory (so a test can stop and restart the card and
//! keep its keys, certificates and PIN counters). It connects to a vpcd virtual reader
//! (vsmartcard) over TCP, so pcscd, the `yubikey` crate and OpenSC see a card in a reader.
//!
//! On top of piv-authenticator this adds what a real YubiKey-oriented client needs:
//! - APDU command chaining (CLA bit 0x10) and response chaining (61xx + GET RESPONSE);
//! - SELECT by the 5-byte PIV RID (the `yubikey` crate sends only `A0 00 00 03 08`);
//! - YubiKey GET VERSION (a 5.x version; the `yubikey` crate only reads serials of 4.x/5.x)
//!   and GET SERIAL (a per-card serial, kept in the state directory);
//! - a card reset, power cycle or PIV SELECT clears the volatile state (PIN and management-key
//!   status), as on a YubiKey;
//! - an empty Key History Object reads as absent (6A82), as on a YubiKey;
//! - an OS-seeded RNG (trussed::virt seeds a constant: every new card would make the same keys).
//!
//! Usage: virtual-piv STATE_DIR [--port PORT] [--host HOST] [--serial N] [--version X.Y.Z]
//! (or env VPIV_PORT, VPIV_HOST, VPIV_SERIAL, VPIV_VERSION). RUST_LOG=debug logs every APDU.
//! Defaults: PIN 123456, PUK 12345678, 3DES management key 010203040506070801020304050607080102030405060708.

use std::{
    fs,
    io::ErrorKind,
    net::TcpStream,
    path::{Path, PathBuf},
    process::ExitCode,
    thread,
    time::{Duration, Instant},
};

use heapless::Vec as HVec;
use iso7816::command::CommandView;
use piv_authenticator::{Authenticator, Options};
use rand_chacha::ChaCha8Rng;
use rand_core::{OsRng, RngCore, SeedableRng};
use trussed::{
    backend::BackendId,
    pipe::TrussedChannel,
    virt::{Runner, StorageConfig, StoreConfig, UserInterface},
    ClientImplementation,
};
use trussed_auth_backend::{AuthBackend, FilesystemLayout};
use trussed_core::types::Location;
use trussed_derive::{ExtensionDispatch, ExtensionId};

// ---------------------------------------------------------------------------------------------
// Trussed platform: file-backed internal/external storage, RAM volatile storage, OS-seeded RNG.
// (trussed::virt::with_platform seeds its RNG with a constant, which would give every virtual
// card the same keys; so the platform is assembled here instead.)

struct Platform<'a> {
    rng: ChaCha8Rng,
    store: trussed::virt::Store<'a>,
    ui: UserInterface,
}

impl<'a> trussed::platform::Platform for Platform<'a> {
    type R = ChaCha8Rng;
    type S = trussed::virt::Store<'a>;
    type UI = UserInterface;

    fn rng(&mut self) -> &mut Self::R {
        &mut self.rng
    }
    fn store(&self) -> Self::S {
        self.store
    }
    fn user_interface(&mut self) -> &mut Self::UI {
        &mut self.ui
    }
}

/// Backends the PIV app needs: trussed-auth (PIN/PUK with retry counters) and trussed-staging
/// (chunked files, wrap-key-to-file, HPKE), plus the Trussed core.
pub enum Backend {
    Auth,
    Staging,
}

#[derive(ExtensionId)]
pub enum Extension {
    Auth = 0,
    Chunked = 1,
    WrapKeyToFile = 2,
    Hpke = 3,
}

#[derive(ExtensionDispatch)]
#[dispatch(backend_id = "Backend", extension_id = "Extension")]
#[extensions(
    Auth = "trussed_auth::AuthExtension",
    Chunked = "trussed_chunked::ChunkedExtension",
    WrapKeyToFile = "trussed_wrap_key_to_file::WrapKeyToFileExtension",
    Hpke = "trussed_hpke::HpkeExtension"
)]
pub struct Dispatch {
    #[extensions("Auth")]
    auth: AuthBackend,
    #[extensions("Chunked", "WrapKeyToFile", "Hpke")]
    staging: trussed_staging::StagingBackend,
}

impl Default for Dispatch {
    fn default() -> Self {
        Self {
            auth: AuthBackend::new(Location::Internal, FilesystemLayout::V0),
            staging: trussed_staging::StagingBackend::new(),
        }
    }
}

const BACKENDS: &[BackendId<Backend>] = &[
    BackendId::Custom(Backend::Auth),
    BackendId::Custom(Backend::Staging),
    BackendId::Core,
];

type Client<'a> = ClientImplementation<'a, trussed::virt::Syscall, Dispatch>;

/// Mounts the card's storage, starts a Trussed service and runs `f` with a PIV app on it, and a
/// second Trussed client of the same client id ("piv", so the same PIN store) through which the
/// wrapper reads the PIN and PUK retry counters for GET METADATA (piv-authenticator 0.7 does not
/// answer it for PIN/PUK). Everything volatile (PIN verified, management key authenticated) is
/// gone when `f` returns.
fn with_piv<R>(
    config: &Config,
    f: impl for<'c> FnOnce(&mut Authenticator<Client<'c>>, &mut Client<'c>) -> R,
) -> R {
    let mut store_config = StoreConfig {
        internal: StorageConfig::filesystem(config.state_dir.join("internal.bin")),
        external: StorageConfig::filesystem(config.state_dir.join("external.bin")),
        volatile: StorageConfig::ram(),
    };
    store_config.with_store(|store| {
        let platform = Platform {
            rng: ChaCha8Rng::from_rng(OsRng).expect("OS random number generator"),
            store,
            ui: UserInterface::new(),
        };
        let channel = TrussedChannel::new();
        let counters_channel = TrussedChannel::new();
        let (requester, responder) = channel.split().expect("fresh Trussed channel");
        let mut runner = Runner::new();
        runner.add_endpoint(responder, "piv", BACKENDS);
        let client = Client::new(requester, runner.syscall(), None);
        let (counters_requester, counters_responder) =
            counters_channel.split().expect("fresh Trussed channel");
        runner.add_endpoint(counters_responder, "piv", BACKENDS);
        let mut counters = Client::new(counters_requester, runner.syscall(), None);
        runner.run(platform, Dispatch::default(), || {
            let options = Options::new()
                .label(b"Virtual PIV")
                .url(b"https://example.invalid/virtual-piv")
                .uuid(Some(config.uuid()));
            let mut piv = Authenticator::new(client, options);
            f(&mut piv, &mut counters)
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Configuration.

struct Config {
    state_dir: PathBuf,
    host: String,
    port: u16,
    serial: u32,
    version: [u8; 3],
}

impl Config {
    /// A per-card GUID for the CHUID (OpenSC derives the token serial from it).
    fn uuid(&self) -> [u8; 16] {
        let mut uuid = *b"VirtPIV-\0\0\0\0\0\0\0\0";
        uuid[12..].copy_from_slice(&self.serial.to_be_bytes());
        uuid
    }
}

const USAGE: &str =
    "usage: virtual-piv STATE_DIR [--port PORT] [--host HOST] [--serial N] [--version X.Y.Z]
  STATE_DIR  directory for the card's storage (created if missing; keep it to keep the card)
  --port     vpcd port (env VPIV_PORT, default 35963)
  --host     vpcd host (env VPIV_HOST, default 127.0.0.1)
  --serial   card serial (env VPIV_SERIAL; default: random on first start, then kept in STATE_DIR)
  --version  YubiKey firmware version reported by GET VERSION (env VPIV_VERSION, default 5.4.3)";

fn parse_args() -> Result<Config, String> {
    let mut state_dir = None;
    let mut host = std::env::var("VPIV_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let mut port = std::env::var("VPIV_PORT").ok();
    let mut serial = std::env::var("VPIV_SERIAL").ok();
    let mut version = std::env::var("VPIV_VERSION").unwrap_or_else(|_| "5.4.3".into());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--port" => port = Some(value("--port")?),
            "--host" => host = value("--host")?,
            "--serial" => serial = Some(value("--serial")?),
            "--version" => version = value("--version")?,
            "-h" | "--help" => return Err(String::new()),
            a if a.starts_with('-') => return Err(format!("unknown option {a}")),
            _ if state_dir.is_none() => state_dir = Some(PathBuf::from(arg)),
            _ => return Err(format!("unexpected argument {arg}")),
        }
    }
    let state_dir = state_dir.ok_or("STATE_DIR is required")?;
    let port = match port {
        Some(p) => p.parse().map_err(|_| format!("bad port {p}"))?,
        None => vpicc::DEFAULT_PORT,
    };
    let parts: Vec<u8> = version
        .split('.')
        .map(|p| p.parse::<u8>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("bad version {version}"))?;
    let version: [u8; 3] = parts
        .try_into()
        .map_err(|_| format!("bad version {version}"))?;
    fs::create_dir_all(&state_dir).map_err(|e| format!("{}: {e}", state_dir.display()))?;
    let serial = load_serial(&state_dir, serial)?;
    Ok(Config {
        state_dir,
        host,
        port,
        serial,
        version,
    })
}

/// The serial given on the command line wins (and is kept); else the kept one; else a new one.
fn load_serial(dir: &Path, given: Option<String>) -> Result<u32, String> {
    let path = dir.join("serial");
    let serial = match given {
        Some(s) => s.parse().map_err(|_| format!("bad serial {s}"))?,
        None => match fs::read_to_string(&path) {
            Ok(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("{}: bad serial", path.display()))?,
            Err(e) if e.kind() == ErrorKind::NotFound => 10_000_000 + OsRng.next_u32() % 90_000_000,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        },
    };
    fs::write(&path, format!("{serial}\n")).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(serial)
}

// ---------------------------------------------------------------------------------------------
// The card as vpcd sees it: APDU transport on top of the PIV app.

const PIV_RID: [u8; 5] = [0xA0, 0x00, 0x00, 0x03, 0x08];
const PIV_AID: [u8; 11] = [
    0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00,
];
/// Largest response the PIV app may produce (a big certificate object).
const REPLY_CAPACITY: usize = 8192;

struct Card<'p, 'c> {
    piv: &'p mut Authenticator<Client<'c>>,
    /// Reads the PIN/PUK retry counters (trussed-auth) for GET METADATA.
    counters: &'p mut Client<'c>,
    config: &'p Config,
    /// (INS, P1, P2) and data of a command chain in progress.
    chain: Option<([u8; 3], Vec<u8>)>,
    /// Response bytes still to be fetched with GET RESPONSE.
    pending: Vec<u8>,
    /// Set by a power-off, reset or SELECT: once the response is sent, the caller restarts the
    /// app on the same storage (clearing the volatile state).
    reset: bool,
}

fn sw(code: u16) -> Vec<u8> {
    code.to_be_bytes().to_vec()
}

impl Card<'_, '_> {
    /// Hands out at most `le` bytes (256 when `le` is 0 or larger) of `data`, keeping the rest
    /// for GET RESPONSE and saying how much is left with 61xx.
    fn respond_chunked(&mut self, mut data: Vec<u8>, le: usize) -> Vec<u8> {
        let max = if le == 0 || le > 256 { 256 } else { le };
        if data.len() <= max {
            data.extend_from_slice(&[0x90, 0x00]);
            return data;
        }
        self.pending = data.split_off(max);
        let left = self.pending.len();
        data.extend_from_slice(&[0x61, if left >= 256 { 0 } else { left as u8 }]);
        data
    }

    fn handle(&mut self, apdu: &[u8]) -> Vec<u8> {
        if apdu.len() < 4 {
            return sw(0x6700);
        }
        let (cla, ins, p1, p2) = (apdu[0], apdu[1], apdu[2], apdu[3]);
        let view = match CommandView::try_from(apdu) {
            Ok(v) => v,
            Err(_) => return sw(0x6700),
        };
        let le = view.expected();
        let extended = view.extended;

        // GET RESPONSE continues the previous response; anything else drops what was left.
        if ins == 0xC0 && cla & 0x10 == 0 {
            if self.pending.is_empty() {
                return sw(0x6985);
            }
            let data = std::mem::take(&mut self.pending);
            return self.respond_chunked(data, le);
        }
        self.pending.clear();

        // Command chaining: collect the pieces, answer 9000 until the last one arrives.
        let header = [ins, p1, p2];
        let mut data = match self.chain.take() {
            Some((h, mut d)) if h == header => {
                d.extend_from_slice(view.data());
                d
            }
            _ => view.data().to_vec(),
        };
        if cla & 0x10 != 0 {
            if data.len() > REPLY_CAPACITY {
                return sw(0x6700);
            }
            self.chain = Some((header, data));
            return sw(0x9000);
        }
        let cla = cla & !0x10;

        // YubiKey extensions answered here (piv-authenticator reports a fixed 6.6.6 and serial).
        if cla == 0 {
            match ins {
                0xFD => return self.respond_chunked(self.config.version.to_vec(), le),
                0xF8 => return self.respond_chunked(self.config.serial.to_be_bytes().to_vec(), le),
                0xF7 if p2 == PIN_REF || p2 == PUK_REF => {
                    let metadata = self.pin_metadata(p2);
                    return self.respond_chunked(metadata, le);
                }
                _ => {}
            }
        }
        // SELECT: only the PIV application exists; accept any AID prefix of it (>= the RID).
        // Like a YubiKey, selecting it (again) drops the PIN and management-key status: the
        // `yubikey` crate relies on that to read the PIN retry counter.
        let select = cla == 0 && ins == 0xA4 && p1 == 0x04;
        if select {
            if data.len() >= PIV_RID.len() && PIV_AID.starts_with(&data) {
                data = PIV_AID.to_vec();
            } else {
                return sw(0x6A82);
            }
        }

        // Re-encode as one (possibly extended) APDU for the PIV app.
        let mut full = vec![cla, ins, p1, p2];
        if data.len() > 255 {
            full.push(0);
            full.extend_from_slice(&(data.len() as u16).to_be_bytes());
            full.extend_from_slice(&data);
            full.extend_from_slice(&[0, 0]);
        } else {
            if !data.is_empty() {
                full.push(data.len() as u8);
                full.extend_from_slice(&data);
            }
            full.push(0);
        }
        let command = match CommandView::try_from(&full[..]) {
            Ok(c) => c,
            Err(_) => return sw(0x6700),
        };
        let mut reply: HVec<u8, REPLY_CAPACITY> = HVec::new();
        match self.piv.respond(command, reply.as_mut_view()) {
            Ok(()) => {
                self.note_reference_change(cla, ins, p2, &data);
                if select {
                    self.reset = true;
                }
                // piv-authenticator always answers the Key History Object (5FC10C), even with
                // no retired keys; a YubiKey has none until one is written, and the `yubikey`
                // crate's piv_keys() reads 5FC10C as a certificate and fails on it.
                if ins == 0xCB && data == [0x5C, 0x03, 0x5F, 0xC1, 0x0C] && no_key_history(&reply) {
                    return sw(0x6A82);
                }
                let reply = reply.to_vec();
                if extended {
                    let mut r = reply;
                    r.extend_from_slice(&[0x90, 0x00]);
                    r
                } else {
                    self.respond_chunked(reply, le)
                }
            }
            Err(status) => sw(status.into()),
        }
    }
}

/// PIV key references of the PIN and the PUK (P2 of VERIFY, CHANGE REFERENCE DATA, GET METADATA).
const PIN_REF: u8 = 0x80;
const PUK_REF: u8 = 0x81;
/// The retry counters' maximum: piv-authenticator 0.7 sets both the PIN and the PUK with
/// `PIN_RETRIES_DEFAULT` (3) when it initialises a card (its `PUK_RETRIES_DEFAULT`, 5, is only
/// used by a `reset_puk` nothing calls), and trussed-auth keeps the maximum across changes.
const RETRIES_MAX: u8 = 3;
const DEFAULT_PIN: [u8; 8] = *b"123456\xff\xff";
const DEFAULT_PUK: [u8; 8] = *b"12345678";

impl Card<'_, '_> {
    /// Yubico's GET METADATA answer for the PIN (0x80) or PUK (0x81): 01 algorithm (FF),
    /// 05 default-value flag, 06 retries (total, remaining). The remaining count is the card's
    /// real counter, read from trussed-auth (which costs no try).
    fn pin_metadata(&mut self, reference: u8) -> Vec<u8> {
        use trussed_auth::AuthClient as _;
        let id: trussed_auth::PinId = if reference == PIN_REF { 0 } else { 1 }.into();
        // A client error (none expected: one request at a time) reads as a blocked counter.
        let left = match self.counters.pin_retries(id) {
            Ok(mut pending) => loop {
                if let core::task::Poll::Ready(reply) = pending.poll() {
                    break reply.ok().and_then(|r| r.retries).unwrap_or(0);
                }
            },
            Err(_) => 0,
        };
        let default = !self.changed_marker(reference).exists();
        vec![
            0x01,
            0x01,
            0xFF,
            0x05,
            0x01,
            u8::from(default),
            0x06,
            0x02,
            RETRIES_MAX,
            left,
        ]
    }

    /// The state-directory file saying the PIN (or PUK) is no longer the default value.
    fn changed_marker(&self, reference: u8) -> PathBuf {
        let name = if reference == PIN_REF {
            "pin-changed"
        } else {
            "puk-changed"
        };
        self.config.state_dir.join(name)
    }

    /// After a successful command: keep the default-value flags of GET METADATA up to date
    /// (CHANGE REFERENCE DATA and RESET RETRY COUNTER set a new value; YubiKey RESET restores
    /// the defaults). Only whether the new value is the default is kept, never the value.
    fn note_reference_change(&mut self, cla: u8, ins: u8, p2: u8, data: &[u8]) {
        if cla != 0 {
            return;
        }
        let set = |reference: u8, new: &[u8]| {
            let default: &[u8] = if reference == PIN_REF {
                &DEFAULT_PIN
            } else {
                &DEFAULT_PUK
            };
            let marker = self.changed_marker(reference);
            let result = if new == default {
                fs::remove_file(&marker).or_else(|e| {
                    if e.kind() == ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
            } else {
                fs::write(&marker, b"")
            };
            if let Err(e) = result {
                log::warn!("{}: {e}", marker.display());
            }
        };
        match (ins, p2) {
            (0x24, PIN_REF | PUK_REF) if data.len() == 16 => set(p2, &data[8..]),
            (0x2C, PIN_REF) if data.len() == 16 => set(PIN_REF, &data[8..]),
            (0xFB, _) => {
                set(PIN_REF, &DEFAULT_PIN);
                set(PUK_REF, &DEFAULT_PUK);
            }
            _ => {}
        }
    }
}

/// A Key History Object (53 { C1 n, C2 m, ... }) that counts no retired keys at all.
fn no_key_history(reply: &[u8]) -> bool {
    let Some(body) = reply.strip_prefix(&[0x53]) else {
        return false;
    };
    let body = match body.first() {
        Some(&len) if len < 0x80 && body.len() == 1 + len as usize => &body[1..],
        _ => return false,
    };
    let mut rest = body;
    let mut counts = 0;
    while let [tag, len, tail @ ..] = rest {
        let len = *len as usize;
        if tail.len() < len {
            return false;
        }
        match tag {
            0xC1 | 0xC2 if len == 1 && tail[0] == 0 => counts += 1,
            0xC1 | 0xC2 => return false,
            _ => {}
        }
        rest = &tail[len..];
    }
    counts == 2
}

impl vpicc::VSmartCard for Card<'_, '_> {
    fn power_on(&mut self) {
        log::debug!("power on");
        self.reset = true;
    }
    fn power_off(&mut self) {
        log::debug!("power off");
        self.reset = true;
    }
    fn reset(&mut self) {
        log::debug!("reset");
        self.reset = true;
    }
    fn execute(&mut self, apdu: &[u8]) -> Vec<u8> {
        let started = Instant::now();
        let response = self.handle(apdu);
        log::debug!(
            "APDU {:02X?} ({} bytes in) -> {} bytes, SW {:02X?} in {:?}",
            &apdu[..apdu.len().min(4)],
            apdu.len(),
            response.len() - 2,
            &response[response.len() - 2..],
            started.elapsed()
        );
        response
    }
}

/// What ended a run of the PIV app.
enum Stop {
    /// Card reset or powered off: start again with fresh volatile state.
    Reset,
    /// The reader went away (pcscd/vpcd stopped).
    Disconnected(std::io::Error),
}

fn serve(config: &Config, conn: &mut vpicc::Connection) -> std::io::Error {
    loop {
        let stop = with_piv(config, |piv, counters| {
            let mut card = Card {
                piv,
                counters,
                config,
                chain: None,
                pending: Vec::new(),
                reset: false,
            };
            loop {
                if let Err(e) = conn.poll(&mut card) {
                    return Stop::Disconnected(e);
                }
                if card.reset {
                    return Stop::Reset;
                }
            }
        });
        match stop {
            Stop::Reset => continue,
            Stop::Disconnected(e) => return e,
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("virtual_piv=info"))
        .init();
    let config = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!("{USAGE}");
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    // Mount (and format, on first start) the storage once up front, so a broken state
    // directory fails here and not on the first APDU.
    with_piv(&config, |_, _| ());
    log::info!(
        "virtual PIV card serial {} (version {}.{}.{}), state in {}, vpcd at {}:{}",
        config.serial,
        config.version[0],
        config.version[1],
        config.version[2],
        config.state_dir.display(),
        config.host,
        config.port
    );

    let addr = format!("{}:{}", config.host, config.port);
    let mut waiting_logged = false;
    loop {
        match TcpStream::connect(&addr) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                log::info!("card inserted into vpcd at {addr}");
                waiting_logged = false;
                let mut conn = vpicc::Connection::from(stream);
                let e = serve(&config, &mut conn);
                log::info!("vpcd connection closed ({e}); reconnecting");
            }
            Err(e) => {
                if !waiting_logged {
                    log::info!("waiting for vpcd at {addr} ({e})");
                    waiting_logged = true;
                }
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
}
