//! What of the user's own machine a sandboxed job sees beyond its workspace: the programs their
//! terminal runs, minus their secrets.
//!
//! - **`PATH`** is the host's own, as it was started (absolute directories only: `.` or a
//!   relative entry would make the working directory's files programs), or the settings'
//!   `sandbox.path`, less the directories a job can write ([`crate::exec::Scope`]). So `cargo`,
//!   `npm`, `go`, `python` resolve as at the user's prompt.
//! - **Variables**: the toolchains' and the locale's ([`TOOLCHAIN_VARS`] and [`PASSED`]:
//!   `CARGO_HOME`, `RUSTUP_HOME`, `GOPATH`, `NVM_DIR`, `PYENV_ROOT`, `VIRTUAL_ENV`, `LANG`, …)
//!   pass through from the host's
//!   environment, with the names `sandbox.env` adds; nothing else does (an allow-list: tokens in
//!   the environment stay out).
//! - **`HOME`** is the user's real home, read-only like the rest of the machine, with the secret
//!   places hidden ([`SECRETS`], relative to the home, and `sandbox.hide`): directories under
//!   empty tmpfs mounts, files under `/dev/null` (each as the kernel resolves it, so a link to a
//!   secret hides the secret), and inside bubblewrap also kept unreadable by a Landlock layer
//!   ([`crate::landlock_sandbox::hide_layer`]) should one be replaced or made while a job
//!   runs. The host's own directories are hidden as before.
//! - **Caches**: a job may not write the user's own toolchain caches: `~/.cargo/registry`,
//!   `~/.npm`, `~/.cache/pip` or Go's module and build caches feed builds that later run
//!   *outside* any sandbox, so a job that could write them could poison them (a crate's source
//!   edited in place runs at the user's next `cargo build`). Jobs read them (what the user has
//!   fetched builds offline), and write their own: one directory of the host's for each
//!   workspace ([`crate::dirs::Dirs::sandbox_cache_for`]) holds `XDG_CACHE_HOME` (pip's cache,
//!   Go's build cache, and most tools'), `npm_config_cache` and `GOCACHE`, writable in that
//!   workspace's jobs and nowhere else. A user who wants jobs to fill their real caches names them in
//!   `sandbox.writable`, accepting that risk; `agent-host doctor` lists them.
//!
//! A secret list is always one place short (an application's token kept somewhere else in the
//! home is readable). `"home": "toolchains"` in the settings turns the home around into an
//! allow-list: the home is hidden but for the toolchains' own directories ([`TOOLCHAIN_DIRS`],
//! the directories the toolchain variables name, and `PATH`'s directories in the home), and
//! git's configuration, still without the secrets in them. Tools that read other settings from
//! the home then do without; `sandbox.show` names more places to show.
//!
//! The settings are read from the host's own settings file only (`settings.json` in its config
//! directory), never from a workspace's: a workspace cannot widen what its jobs see.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Places in the home that hold secrets (keys, tokens, passwords, sessions, histories), hidden
/// from every job. Relative to the home.
pub const SECRETS: &[&str] = &[
    // keys, and agents' and container engines' sockets (a socket reaches its server whatever
    // the mounts: Docker's runs anything as root)
    ".ssh",
    ".1password",
    ".docker/desktop",
    ".colima",
    ".lima",
    ".rd",
    ".orbstack",
    ".gnupg",
    ".password-store",
    ".local/share/keyrings",
    ".pki",
    // clouds and clusters
    ".aws",
    ".azure",
    ".config/gcloud",
    ".kube",
    ".oci",
    ".vault-token",
    ".terraform.d/credentials.tfrc.json",
    ".config/doctl",
    ".config/op",
    ".config/hcloud",
    ".config/linode-cli",
    ".databrickscfg",
    ".snowflake",
    ".dbt/profiles.yml",
    ".pulumi/credentials.json",
    ".s3cfg",
    ".config/rclone",
    ".config/sops",
    ".config/age",
    // deployment platforms and APIs
    ".fly",
    ".config/netlify",
    ".local/share/com.vercel.cli",
    ".wrangler",
    ".config/.wrangler",
    ".supabase/access-token",
    ".railway",
    ".config/ngrok",
    ".config/heroku",
    ".huggingface/token",
    ".cache/huggingface/token",
    ".kaggle/kaggle.json",
    ".config/keybase",
    ".local/share/keybase",
    // forges, registries and package managers
    ".config/gh",
    ".config/hub",
    ".config/glab-cli",
    ".netrc",
    ".git-credentials",
    ".config/git/credentials",
    ".docker/config.json",
    ".config/containers/auth.json",
    ".npmrc",
    ".yarnrc",
    ".yarnrc.yml",
    ".config/configstore",
    ".config/github-copilot",
    ".config/composer/auth.json",
    ".boto",
    ".terraformrc",
    ".pypirc",
    ".gem/credentials",
    ".cargo/credentials",
    ".cargo/credentials.toml",
    ".m2/settings.xml",
    ".gradle/gradle.properties",
    ".config/pip/pip.conf",
    // databases
    ".pgpass",
    ".my.cnf",
    // wallets
    ".bitcoin",
    ".electrum",
    ".ethereum",
    // browsers, mail and messengers
    ".mozilla",
    ".thunderbird",
    ".config/google-chrome",
    ".config/chromium",
    ".config/BraveSoftware",
    ".config/microsoft-edge",
    ".var/app",
    ".config/Slack",
    ".config/discord",
    ".config/Signal",
    // what was typed at prompts
    ".bash_history",
    ".zsh_history",
    ".zhistory",
    ".histfile",
    ".local/share/atuin",
    ".local/share/fish/fish_history",
    ".python_history",
    ".node_repl_history",
    ".psql_history",
    ".mysql_history",
    ".sqlite_history",
    ".lesshst",
    ".viminfo",
];

/// Variables that name a secret file or directory (or a list of them, `:`-separated), hidden
/// where they point.
pub const SECRET_VARS: &[&str] = &[
    "SSH_AUTH_SOCK",
    "GNUPGHOME",
    "PASSWORD_STORE_DIR",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "CLOUDSDK_CONFIG",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "KUBECONFIG",
    "NETRC",
    "NPM_CONFIG_USERCONFIG",
    "VAULT_CONFIG_PATH",
];

/// The agents' own logins, hidden from every job as [`SECRETS`] are (a job has no use for
/// them); the jail of `agent-host run` leaves these to its agent, and hides the rest.
pub const AGENT_LOGINS: &[&str] = &[
    ".claude.json",
    ".claude.json.backup",
    ".claude/.credentials.json",
    ".codex/auth.json",
    ".gemini/oauth_creds.json",
];

/// The `places` that exist now, each as the kernel resolves it, with
/// whether it is a directory; sorted, once each.
pub fn present(places: impl IntoIterator<Item = PathBuf>) -> Vec<(PathBuf, bool)> {
    Resolver::default().present(places)
}

/// `place` as the kernel would resolve it: itself resolved if it exists, else its nearest
/// existing ancestor resolved with the rest of the path after it (what a file made there later
/// would be); `None` for a relative path.
pub fn resolve_place(place: &Path) -> Option<PathBuf> {
    Resolver::default().place(place)
}

/// Resolves paths as the kernel does ([`Path::canonicalize`]), remembering each answer, so
/// that many places below the same directories (a home's secret places) cost one look at each
/// directory instead of one per place below it: a plain absolute path is its parent's answer
/// joined with its name, looked at without following it, and resolved in full only where that
/// is a symbolic link; any other path (`..` in it) is resolved in full. For the answers of one
/// moment: nothing remembered is looked at again.
#[derive(Debug, Default)]
pub struct Resolver {
    known: HashMap<PathBuf, Option<PathBuf>>,
}

impl Resolver {
    /// `path` resolved if it exists, as [`Path::canonicalize`] would.
    pub fn canonical(&mut self, path: &Path) -> Option<PathBuf> {
        if let Some(known) = self.known.get(path) {
            return known.clone();
        }
        let resolved = self.resolve(path);
        self.known.insert(path.to_path_buf(), resolved.clone());
        resolved
    }

    fn resolve(&mut self, path: &Path) -> Option<PathBuf> {
        use std::path::Component;
        let plain = path.is_absolute()
            && path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        let (true, Some(parent), Some(name)) = (plain, path.parent(), path.file_name()) else {
            return path.canonicalize().ok();
        };
        let candidate = self.canonical(parent)?.join(name);
        match candidate.symlink_metadata() {
            Ok(meta) if meta.file_type().is_symlink() => candidate.canonicalize().ok(),
            Ok(_) => Some(candidate),
            Err(_) => None,
        }
    }

    /// [`resolve_place`], remembering.
    pub fn place(&mut self, place: &Path) -> Option<PathBuf> {
        if !place.is_absolute() {
            return None;
        }
        let mut rest = Vec::new();
        let mut at = place;
        loop {
            if let Some(real) = self.canonical(at) {
                return Some(rest.iter().rev().fold(real, |p, part| p.join(part)));
            }
            rest.push(at.file_name()?.to_os_string());
            at = at.parent()?;
        }
    }

    /// [`present`], remembering.
    pub fn present(&mut self, places: impl IntoIterator<Item = PathBuf>) -> Vec<(PathBuf, bool)> {
        let mut out: Vec<(PathBuf, bool)> = places
            .into_iter()
            .filter_map(|p| self.canonical(&p))
            .map(|p| {
                let dir = p.is_dir();
                (p, dir)
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Variables passed from the host's environment to every job when set there, besides those
/// that name a toolchain's directory ([`TOOLCHAIN_VARS`]).
pub const PASSED: &[&str] = &[
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "USER",
    "LOGNAME",
    "RUSTUP_TOOLCHAIN",
    "GOTOOLCHAIN",
    "NVM_BIN",
    "NVM_INC",
    "PYENV_VERSION",
    "CONDA_DEFAULT_ENV",
    "GEM_PATH",
];

/// Where toolchains live in the home when no variable says otherwise, and the configuration
/// that builds read: shown when the home is hidden (`"home": "toolchains"`).
pub const TOOLCHAIN_DIRS: &[&str] = &[
    ".cargo",
    ".rustup",
    ".nvm",
    ".volta",
    ".bun",
    ".deno",
    ".pyenv",
    ".local/bin",
    ".local/lib",
    ".local/share/pnpm",
    "go",
    ".sdkman",
    ".asdf",
    ".local/share/mise",
    ".rbenv",
    ".gitconfig",
    ".config/git",
];

/// Variables that name a toolchain's directory: passed to every job when set, and shown when
/// the home is hidden.
pub const TOOLCHAIN_VARS: &[&str] = &[
    "CARGO_HOME",
    "RUSTUP_HOME",
    "GOPATH",
    "GOROOT",
    "GOMODCACHE",
    "NVM_DIR",
    "VOLTA_HOME",
    "BUN_INSTALL",
    "DENO_DIR",
    "DENO_INSTALL",
    "PNPM_HOME",
    "PYENV_ROOT",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "JAVA_HOME",
    "ASDF_DIR",
    "ASDF_DATA_DIR",
    "MISE_DATA_DIR",
    "RBENV_ROOT",
    "GEM_HOME",
];

/// How much of the home jobs see.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HomeView {
    /// All of it, read-only, but the secret places.
    #[default]
    ReadOnly,
    /// Only the toolchains' directories and git's configuration (and `show`), read-only, but
    /// the secret places in them.
    Toolchains,
}

/// A job's `TMPDIR` inside its sandbox's private `/tmp`.
pub const JOB_TMP: &str = "/tmp/job";

/// `PATH` when the host has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The `sandbox` object of the host's settings file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSettings {
    /// `PATH` for jobs instead of the host's.
    #[serde(default)]
    pub path: Option<String>,
    /// More variables to pass through (names).
    #[serde(default)]
    pub env: Vec<String>,
    /// More places to hide (absolute, or `~/…`).
    #[serde(default)]
    pub hide: Vec<String>,
    /// Places of the user's that jobs may write (absolute, or `~/…`): the user's own caches,
    /// accepting that a job could poison them.
    #[serde(default)]
    pub writable: Vec<String>,
    /// How much of the home jobs see.
    #[serde(default)]
    pub home: HomeView,
    /// With `"home": "toolchains"`, more places of the home to show (absolute, or `~/…`).
    #[serde(default)]
    pub show: Vec<String>,
}

/// Why the settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// Unreadable.
    #[error("{path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
    /// Not the expected shape.
    #[error("{path}: sandbox: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl SandboxSettings {
    /// The `sandbox` object of the settings file at `path` (defaults when the file or the
    /// object is absent).
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(error) => Err(SettingsError::Read { path: path.into(), error }),
        }
    }

    /// The `sandbox` object of settings text read from `path` (named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, SettingsError> {
        #[derive(serde::Deserialize)]
        struct File {
            #[serde(default)]
            sandbox: Option<SandboxSettings>,
        }
        let file: File = serde_json::from_str(text)
            .map_err(|e| SettingsError::Invalid { path: path.into(), message: e.to_string() })?;
        let settings = file.sandbox.unwrap_or_default();
        let invalid = |message: String| SettingsError::Invalid { path: path.into(), message };
        for name in &settings.env {
            let valid = !name.is_empty()
                && name.len() <= 128
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit();
            if !valid {
                return Err(invalid(format!("env: {name:?} is not a variable name")));
            }
        }
        for place in settings.hide.iter().chain(&settings.writable).chain(&settings.show) {
            if !(place.starts_with('/') || place.starts_with("~/")) {
                return Err(invalid(format!("{place:?} is neither absolute nor ~/…")));
            }
        }
        Ok(settings)
    }
}

/// What jobs see of the user's machine; made once when the host starts ([`UserEnv::new`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEnv {
    /// The user's home (as the kernel resolves it), if there is a usable one.
    pub home: Option<PathBuf>,
    /// `PATH` for jobs.
    pub path: String,
    /// Variables passed through, with their values.
    pub vars: BTreeMap<String, String>,
    /// Where secrets may be: hidden wherever they exist when a job starts.
    pub secrets: Vec<PathBuf>,
    /// The jobs' own cache directory, writable in every job (one per workspace).
    pub cache: Option<PathBuf>,
    /// The user's places jobs may write (settings).
    pub writable: Vec<PathBuf>,
    /// With the home hidden (`"home": "toolchains"`): the places of it shown.
    pub shown: Option<Vec<PathBuf>>,
}

impl UserEnv {
    /// From the host's environment (`vars`, the process's own in the host) and `settings`,
    /// with `cache` as the jobs' cache directory.
    pub fn new(
        vars: impl IntoIterator<Item = (String, String)>,
        settings: &SandboxSettings,
        cache: Option<PathBuf>,
    ) -> Self {
        let vars: BTreeMap<String, String> = vars.into_iter().collect();
        // `/` or `/tmp` as a home would bring what the sandbox hides back in.
        let home = vars
            .get("HOME")
            .map(PathBuf::from)
            .and_then(|h| h.canonicalize().ok())
            .filter(|h| h.is_absolute() && h != Path::new("/") && h != Path::new("/tmp"));
        let expand = |place: &str| -> Option<PathBuf> {
            match place.strip_prefix("~/") {
                Some(rest) => home.as_ref().map(|h| h.join(rest)),
                None => Some(PathBuf::from(place)),
            }
        };
        let path = settings.path.clone().or_else(|| vars.get("PATH").cloned());
        let path = path.map_or_else(|| DEFAULT_PATH.to_string(), |p| absolute_path(&p));
        let passed: BTreeMap<String, String> = PASSED
            .iter()
            .chain(TOOLCHAIN_VARS)
            .map(|n| n.to_string())
            .chain(settings.env.iter().cloned())
            .filter_map(|name| vars.get(&name).map(|v| (name, v.clone())))
            .collect();
        // Secrets that variables place elsewhere (a toolchain's home keeps its tokens there).
        let elsewhere = [("CARGO_HOME", "credentials"), ("CARGO_HOME", "credentials.toml")]
            .into_iter()
            .chain([("DOCKER_CONFIG", "config.json")])
            .filter_map(|(var, file)| Some(PathBuf::from(vars.get(var)?).join(file)))
            .chain(
                SECRET_VARS
                    .iter()
                    .filter_map(|v| vars.get(*v))
                    .flat_map(|v| v.split(':'))
                    .filter(|p| p.starts_with('/'))
                    .map(PathBuf::from),
            );
        let mut secrets: Vec<PathBuf> = home
            .iter()
            .flat_map(|h| SECRETS.iter().chain(AGENT_LOGINS).map(move |s| h.join(s)))
            .chain(elsewhere)
            .chain(settings.hide.iter().filter_map(|p| expand(p)))
            .collect();
        secrets.sort();
        secrets.dedup();
        let writable = settings.writable.iter().filter_map(|p| expand(p)).collect();
        let shown = match (settings.home, &home) {
            (HomeView::Toolchains, Some(h)) => {
                let named = TOOLCHAIN_VARS.iter().filter_map(|v| vars.get(*v)).map(PathBuf::from);
                let on_path = path.split(':').map(PathBuf::from);
                let mut shown: Vec<PathBuf> = TOOLCHAIN_DIRS
                    .iter()
                    .map(|d| h.join(d))
                    .chain(named)
                    .chain(on_path)
                    .chain(settings.show.iter().filter_map(|p| expand(p)))
                    .filter(|p| p.starts_with(h) && p != h)
                    .collect();
                shown.sort();
                shown.dedup();
                Some(shown)
            }
            _ => None,
        };
        Self { home, path, vars: passed, secrets, cache, writable, shown }
    }

    /// From this process's environment and the host's settings file `settings`.
    pub fn from_host(settings: &Path, cache: Option<PathBuf>) -> Result<Self, SettingsError> {
        let settings = SandboxSettings::load(settings)?;
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        Ok(Self::new(vars, &settings, cache))
    }

    /// The environment a job starts from (before the job's own variables).
    pub fn job_env(&self) -> BTreeMap<String, String> {
        let mut env = self.vars.clone();
        env.insert("PATH".into(), self.path.clone());
        // Without a home, the job's private temporary directory: never a place it shares.
        let home = self.home.as_deref().unwrap_or(Path::new(JOB_TMP));
        env.insert("HOME".into(), home.display().to_string());
        env.insert("TMPDIR".into(), JOB_TMP.into());
        env.entry("LANG".into()).or_insert_with(|| "C.UTF-8".into());
        // Output is shown by terminals (xterm.js on a device, the user's at `remote run`):
        // colours asked for (`--color always`) come out as they would there. A job's output is
        // a pipe, so nothing colours unasked.
        env.insert("TERM".into(), "xterm-256color".into());
        if let Some(cache) = &self.cache {
            let cache = cache.display();
            env.insert("XDG_CACHE_HOME".into(), cache.to_string());
            env.insert("npm_config_cache".into(), format!("{cache}/npm"));
            env.insert("GOCACHE".into(), format!("{cache}/go-build"));
        }
        env
    }

    /// The secret places that exist now, each as the kernel resolves it, with whether it is a
    /// directory; sorted, once each.
    pub fn secrets_present(&self) -> Vec<(PathBuf, bool)> {
        present(self.secrets.iter().cloned())
    }

    /// With the home hidden, the places of it shown that exist now, as the kernel resolves
    /// them, those still inside the home only (a link out of it shows nothing more).
    pub fn shown_present(&self) -> Vec<PathBuf> {
        let (Some(home), Some(shown)) = (&self.home, &self.shown) else { return Vec::new() };
        let mut out: Vec<PathBuf> = shown
            .iter()
            .filter_map(|p| p.canonicalize().ok())
            .filter(|p| p.starts_with(home) && p != home)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The jobs' cache as the kernel resolves it, made when missing.
    pub fn cache_present(&self) -> Option<PathBuf> {
        let cache = self.cache.as_ref()?;
        if let Err(e) = make_private_dir(cache) {
            tracing::warn!("cannot make the jobs' cache {}: {e}", cache.display());
            return None;
        }
        cache.canonicalize().ok()
    }

    /// The user's places that jobs may write (settings) that exist now, as the kernel
    /// resolves them.
    pub fn writable_present(&self) -> Vec<PathBuf> {
        self.writable.iter().filter_map(|p| p.canonicalize().ok()).collect()
    }

    /// Why jobs cannot run with these settings around `roots` and the host's `hidden`
    /// directories, if so: a place made writable that is `/`, or holds the home, a root or the
    /// host's directories, would take their protections with it.
    pub fn unfit(&self, roots: &[PathBuf], hidden: &[PathBuf]) -> Option<String> {
        let guarded: Vec<&Path> = roots
            .iter()
            .chain(hidden)
            .chain(&self.home)
            .map(PathBuf::as_path)
            .chain([Path::new("/")])
            .collect();
        for place in &self.writable {
            let real = place.canonicalize().unwrap_or_else(|_| place.clone());
            if let Some(inside) = guarded.iter().find(|g| g.starts_with(&real)) {
                return Some(format!(
                    "sandbox.writable names {}, which holds {}: jobs would be free to change \
                     what must stay protected there; name the cache inside it instead",
                    place.display(),
                    inside.display()
                ));
            }
        }
        None
    }

    /// What `agent-host doctor` says of it, one line each.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!("PATH {}", self.path)];
        let names: Vec<&str> = self.vars.keys().map(String::as_str).collect();
        lines.push(format!(
            "variables passed: {}",
            if names.is_empty() { "none".into() } else { names.join(" ") }
        ));
        match (&self.home, &self.shown) {
            (Some(home), None) => lines.push(format!("HOME {} (read-only)", home.display())),
            (Some(home), Some(_)) => {
                let shown: Vec<String> =
                    self.shown_present().iter().map(|p| p.display().to_string()).collect();
                lines.push(format!(
                    "HOME {} hidden but for (read-only): {}",
                    home.display(),
                    shown.join(" ")
                ));
            }
            (None, _) => {
                lines.push("HOME the job's own temporary directory (no usable home)".into())
            }
        }
        let hidden: Vec<String> =
            self.secrets_present().into_iter().map(|(p, _)| p.display().to_string()).collect();
        lines.push(format!(
            "secrets hidden here: {}",
            if hidden.is_empty() { "none present".into() } else { hidden.join(" ") }
        ));
        if let Some(cache) = &self.cache {
            lines.push(format!(
                "jobs' own caches (writable): {} (XDG_CACHE_HOME, npm_config_cache, GOCACHE)",
                cache.display()
            ));
        }
        for place in &self.writable {
            lines.push(format!(
                "WRITABLE by jobs (settings; a job could poison it): {}",
                place.display()
            ));
        }
        lines
    }
}

/// `path`'s absolute directories, in order, once each.
fn absolute_path(path: &str) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for dir in path.split(':') {
        if dir.starts_with('/') && !seen.contains(&dir) {
            seen.push(dir);
        }
    }
    seen.join(":")
}

/// Makes `dir` (and its parents) with mode 0700 where missing.
fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn path_keeps_absolute_directories_once_and_only_listed_variables_pass() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path().to_str().unwrap();
        let env = UserEnv::new(
            vars(&[
                ("HOME", h),
                ("PATH", "/a/bin:.:bin::/a/bin:/usr/bin"),
                ("CARGO_HOME", "/c"),
                ("GITHUB_TOKEN", "secret"),
                ("MY_TOOL", "x"),
            ]),
            &SandboxSettings { env: vec!["MY_TOOL".into()], ..Default::default() },
            None,
        );
        assert_eq!(env.path, "/a/bin:/usr/bin");
        let job = env.job_env();
        assert_eq!(job.get("CARGO_HOME").map(String::as_str), Some("/c"));
        assert_eq!(job.get("MY_TOOL").map(String::as_str), Some("x"));
        assert!(!job.contains_key("GITHUB_TOKEN"));
        let real = home.path().canonicalize().unwrap();
        assert_eq!(job.get("HOME"), Some(&real.display().to_string()));
    }

    #[test]
    fn settings_path_wins_and_no_home_means_the_working_directory() {
        let env = UserEnv::new(
            vars(&[("PATH", "/a")]),
            &SandboxSettings { path: Some("/x:/y".into()), ..Default::default() },
            None,
        );
        assert_eq!(env.path, "/x:/y");
        assert_eq!(env.job_env().get("HOME").map(String::as_str), Some(JOB_TMP));
        assert!(env.secrets.is_empty());
    }

    #[test]
    fn present_secrets_are_found_through_links_and_settings_extend_the_list() {
        let home = tempfile::tempdir().unwrap();
        let real = home.path().canonicalize().unwrap();
        std::fs::create_dir_all(real.join(".ssh")).unwrap();
        std::fs::write(real.join("vault.txt"), "k").unwrap();
        std::fs::write(real.join("target"), "t").unwrap();
        std::os::unix::fs::symlink(real.join("target"), real.join(".netrc")).unwrap();
        let settings = SandboxSettings { hide: vec!["~/vault.txt".into()], ..Default::default() };
        let env = UserEnv::new(vars(&[("HOME", real.to_str().unwrap())]), &settings, None);
        let present = env.secrets_present();
        assert!(present.contains(&(real.join(".ssh"), true)));
        assert!(present.contains(&(real.join("vault.txt"), false)));
        // The link's target is what gets hidden.
        assert!(present.contains(&(real.join("target"), false)));
        assert!(!present.iter().any(|(p, _)| p.ends_with(".aws")));
    }

    #[test]
    fn a_hidden_home_shows_the_toolchains_path_and_settings_name_in_it_and_nothing_outside() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path().canonicalize().unwrap();
        for dir in [".cargo", "tools/bin", "sdk", "docs", "elsewhere"] {
            std::fs::create_dir_all(h.join(dir)).unwrap();
        }
        std::os::unix::fs::symlink("/etc", h.join("docs/out")).unwrap();
        let path = format!("{}:/usr/bin", h.join("tools/bin").display());
        let settings = SandboxSettings {
            home: HomeView::Toolchains,
            show: vec!["~/docs".into(), "~/docs/out".into()],
            ..Default::default()
        };
        let sdk = h.join("sdk").display().to_string();
        let vars = vars(&[("HOME", h.to_str().unwrap()), ("PATH", &path), ("JAVA_HOME", &sdk)]);
        let env = UserEnv::new(vars, &settings, None);
        let shown = env.shown_present();
        for place in [".cargo", "tools/bin", "sdk", "docs"] {
            assert!(shown.contains(&h.join(place)), "{place}: {shown:?}");
        }
        assert!(!shown.contains(&h.join("elsewhere")) && !shown.contains(&h));
        // A link in it that leads out shows nothing more (what is outside is there already).
        assert!(!shown.iter().any(|p| !p.starts_with(&h)), "{shown:?}");
        let said = env.describe().join("\n");
        assert!(said.contains("hidden but for (read-only)"), "{said}");
        // The default shows the whole home.
        let default = UserEnv::new(
            vec![("HOME".into(), h.display().to_string())],
            &SandboxSettings::default(),
            None,
        );
        assert!(default.shown.is_none() && default.shown_present().is_empty());
    }

    #[test]
    fn a_writable_place_that_holds_a_root_the_home_or_the_hosts_state_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let b = base.path().canonicalize().unwrap();
        let (home, ws, state) = (b.join("home"), b.join("home/go/src/x"), b.join("home/.local/st"));
        for d in [&ws, &state, &home.join(".cargo/registry")] {
            std::fs::create_dir_all(d).unwrap();
        }
        let vars = || vec![("HOME".to_string(), home.display().to_string())];
        let with = |writable: &[&str]| {
            let settings = SandboxSettings {
                writable: writable.iter().map(|w| w.to_string()).collect(),
                ..Default::default()
            };
            UserEnv::new(vars(), &settings, None)
                .unfit(std::slice::from_ref(&ws), std::slice::from_ref(&state))
        };
        assert_eq!(with(&["~/.cargo/registry"]), None);
        for bad in ["~/go", "~/.local", "/", &home.display().to_string()] {
            assert!(with(&[bad]).is_some(), "{bad}");
        }
    }

    #[test]
    fn variables_that_name_secrets_hide_what_they_name() {
        let env = UserEnv::new(
            vars(&[
                ("GOOGLE_APPLICATION_CREDENTIALS", "/srv/gcp.json"),
                ("KUBECONFIG", "/a/kube:/b/kube"),
                ("SSH_AUTH_SOCK", "relative/sock"),
            ]),
            &SandboxSettings::default(),
            None,
        );
        for place in ["/srv/gcp.json", "/a/kube", "/b/kube"] {
            assert!(env.secrets.contains(&PathBuf::from(place)), "{place}");
        }
        assert!(!env.secrets.iter().any(|p| p.ends_with("sock")));
    }

    #[test]
    fn a_place_that_does_not_exist_resolves_through_its_nearest_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        std::fs::create_dir(real.join("a")).unwrap();
        std::os::unix::fs::symlink(real.join("a"), real.join("link")).unwrap();
        assert_eq!(resolve_place(&real.join("link/b/c")), Some(real.join("a/b/c")));
        assert_eq!(resolve_place(&real.join("link")), Some(real.join("a")));
        assert_eq!(resolve_place(Path::new("relative")), None);
    }

    /// [`resolve_place`] with nothing remembered: every step asks the kernel.
    fn place_by_kernel(place: &Path) -> Option<PathBuf> {
        let mut rest = Vec::new();
        let mut at = place;
        loop {
            if let Ok(real) = at.canonicalize() {
                return Some(
                    rest.iter().rev().fold(real, |p, part: &std::ffi::OsString| p.join(part)),
                );
            }
            rest.push(at.file_name()?.to_os_string());
            at = at.parent()?;
        }
    }

    #[test]
    fn the_resolver_answers_as_the_kernel_does() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        for d in ["a/b/c", "x/y"] {
            std::fs::create_dir_all(real.join(d)).unwrap();
        }
        std::fs::write(real.join("a/file"), "").unwrap();
        symlink(real.join("a/b"), real.join("abs")).unwrap(); // absolute
        symlink("a/b/c", real.join("rel")).unwrap(); // relative
        symlink("rel", real.join("chain")).unwrap(); // a link to a link
        symlink("../x", real.join("a/up")).unwrap(); // out through ..
        symlink(real.join("nowhere"), real.join("dangling")).unwrap();
        symlink("loop2", real.join("loop1")).unwrap();
        symlink("loop1", real.join("loop2")).unwrap();
        let names = [
            "",
            "a",
            "a/b",
            "a/b/c",
            "a/file",
            "a/file/below",
            "abs",
            "abs/c",
            "abs/c/new",
            "rel",
            "rel/../..",
            "chain",
            "chain/more",
            "a/up",
            "a/up/y",
            "a/up/../a/b",
            "dangling",
            "dangling/x",
            "loop1",
            "loop1/x",
            "missing",
            "missing/deeper",
            "a/./b",
            "a/b/../file",
        ];
        let mut resolver = Resolver::default();
        for round in 0..2 {
            for name in names {
                let path = if name.is_empty() { real.clone() } else { real.join(name) };
                assert_eq!(resolver.canonical(&path), path.canonicalize().ok(), "{name} ({round})");
                assert_eq!(resolver.place(&path), place_by_kernel(&path), "{name}");
            }
        }
        assert_eq!(resolver.canonical(Path::new("/")), Some(PathBuf::from("/")));
        assert_eq!(
            resolver.canonical(Path::new("relative")),
            Path::new("relative").canonicalize().ok()
        );
    }

    #[test]
    fn settings_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("settings.json");
        assert_eq!(SandboxSettings::load(&file).unwrap(), SandboxSettings::default());
        for bad in [
            r#"{"sandbox": {"env": ["A B"]}}"#,
            r#"{"sandbox": {"hide": ["relative"]}}"#,
            r#"{"sandbox": {"writable": ["x/y"]}}"#,
            r#"{"sandbox": {"unknown": 1}}"#,
            r#"{"sandbox": {"home": "everything"}}"#,
            r#"{"sandbox": {"show": ["docs"]}}"#,
        ] {
            std::fs::write(&file, bad).unwrap();
            assert!(SandboxSettings::load(&file).is_err(), "{bad}");
        }
        std::fs::write(&file, r#"{"permissions": {}, "sandbox": {"writable": ["~/.npm"]}}"#)
            .unwrap();
        assert_eq!(SandboxSettings::load(&file).unwrap().writable, vec!["~/.npm".to_string()]);
    }
}
