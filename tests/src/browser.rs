//! Browser fixtures: a real chromedriver process on an ephemeral port, a
//! fresh headless Chromium profile per test driven over WebDriver
//! (fantoccini), and small waiting helpers for pages rendered by the wasm
//! client. Browser tests never skip: a missing `dist/`, Chromium or
//! chromedriver is a clear failure.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tempfile::TempDir;

/// How long a helper waits for the page before failing.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The trunk-built client to serve: `$SEXTANT_DIST` (set by `cargo xtask
/// test`) or `<repo>/dist`. Panics with the fix if it was not built.
pub fn dist_dir() -> PathBuf {
    let dist = std::env::var_os("SEXTANT_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("dist"));
    assert!(
        dist.join("index.html").is_file(),
        "{} has no index.html: the browser tests need the built client. \
         Run `trunk build --release` (`cargo xtask test` does it first).",
        dist.display()
    );
    dist
}

/// A CSS selector for `data-testid="id"`.
pub fn testid(id: &str) -> String {
    format!("[data-testid=\"{id}\"]")
}

fn find_program(names: &[&str], fallbacks: &[&str]) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|path| {
        std::env::split_paths(&path)
            .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
            .collect::<Vec<_>>()
    });
    on_path
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|candidate| candidate.is_file())
}

/// Chromium: `$SEXTANT_CHROMIUM`, or `chromium` (Debian) and friends on PATH.
pub fn chromium_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("SEXTANT_CHROMIUM") {
        return Ok(path.into());
    }
    find_program(
        &["chromium", "chromium-browser", "google-chrome"],
        &["/usr/bin/chromium"],
    )
    .ok_or_else(|| anyhow!("Chromium not found: apt-get install chromium chromium-driver"))
}

/// chromedriver: `$SEXTANT_CHROMEDRIVER`, or `chromedriver` on PATH.
pub fn chromedriver_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("SEXTANT_CHROMEDRIVER") {
        return Ok(path.into());
    }
    find_program(&["chromedriver"], &["/usr/bin/chromedriver"])
        .ok_or_else(|| anyhow!("chromedriver not found: apt-get install chromium-driver"))
}

/// A chromedriver process in its own process group, killed (with any
/// browser it started) on drop.
pub struct ChromeDriver {
    child: Child,
    pub port: u16,
    log_path: PathBuf,
}

impl ChromeDriver {
    /// Starts chromedriver on a free loopback port and waits until it is ready.
    /// `log_dir` receives its log.
    pub fn start(log_dir: &Path) -> Result<Self> {
        let binary = chromedriver_binary()?;
        let mut last_error = None;
        // A free port can be taken between probing and binding: retry a few times.
        for _ in 0..3 {
            let port = free_port()?;
            let log_path = log_dir.join(format!("chromedriver-{port}.log"));
            let mut command = Command::new(&binary);
            command
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log_path.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            #[cfg(unix)]
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
            let child = command
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))?;
            let mut driver = ChromeDriver {
                child,
                port,
                log_path,
            };
            match driver.wait_ready(PAGE_TIMEOUT) {
                Ok(()) => return Ok(driver),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What chromedriver logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let status = format!("{}/status", self.url());
        while Instant::now() < deadline {
            if let Some(exit) = self.child.try_wait()? {
                bail!("chromedriver exited with {exit}; log:\n{}", self.log());
            }
            if crate::probe::blocking_get(&status).is_ok_and(|code| code == 200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("chromedriver never became ready; log:\n{}", self.log())
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // Kill the whole group: chromedriver and the Chromium it launched.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Headless Chromium with a fresh profile, driven over WebDriver.
pub struct Browser {
    pub client: Client,
    driver: ChromeDriver,
    profile: TempDir,
    /// The token of the login cookie this browser holds (cookies are per
    /// host, not per port: one for every 127.0.0.1 server and relay).
    signed_in: std::sync::Mutex<Option<String>>,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a new user-data-dir.
    pub async fn launch() -> Result<Self> {
        let profile = tempfile::tempdir()?;
        let driver = ChromeDriver::start(profile.path())?;
        let user_data_dir = profile.path().join("chromium-profile");
        let mut options = json!({
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--window-size=1280,900",
                format!("--user-data-dir={}", user_data_dir.display()),
            ],
        });
        options["binary"] = json!(chromium_binary()?);
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&driver.url())
            .await
            .map_err(|e| {
                anyhow!(
                    "starting Chromium through chromedriver: {e}\n{}",
                    driver.log()
                )
            })?;
        Ok(Self {
            client,
            driver,
            profile,
            signed_in: std::sync::Mutex::new(None),
        })
    }

    /// The directory of this browser's profile and logs (removed on drop).
    pub fn profile_dir(&self) -> &Path {
        self.profile.path()
    }

    /// chromedriver's log, for failure messages.
    pub fn driver_log(&self) -> String {
        self.driver.log()
    }

    /// Opens `url`. The first time a server whose owner token the fixtures
    /// know is opened, the browser signs in on the way: it opens `url` with
    /// `?token=…`, which sets the login cookie and redirects to `url`.
    pub async fn goto(&self, url: &str) -> Result<()> {
        if let Some(token) = crate::token_for(url) {
            if self.signed_in.lock().unwrap().as_deref() != Some(token.as_str()) {
                return self.sign_in(url, &token).await;
            }
        }
        self.client
            .goto(url)
            .await
            .with_context(|| format!("navigating to {url}"))
    }

    /// Signs in with `token` by opening `url?token=…` (the server sets the
    /// cookie and answers 303 to `url`).
    pub async fn sign_in(&self, url: &str, token: &str) -> Result<()> {
        let separator = if url.contains('?') { '&' } else { '?' };
        let link = format!("{url}{separator}token={token}");
        self.client
            .goto(&link)
            .await
            .with_context(|| format!("signing in at {url}"))?;
        *self.signed_in.lock().unwrap() = Some(token.to_owned());
        Ok(())
    }

    /// Waits until `css` matches an element and returns it. Errors while
    /// the page navigates or reloads ("aborted by navigation", a stale
    /// document) are retried until the deadline, like a missing element.
    pub async fn wait_for(&self, css: &str) -> Result<Element> {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            let error = match self.client.find(Locator::Css(css)).await {
                Ok(element) => return Ok(element),
                Err(error) => error,
            };
            if Instant::now() >= deadline {
                return Err(error)
                    .with_context(|| format!("waiting {}s for `{css}`", PAGE_TIMEOUT.as_secs()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The visible text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> Result<String> {
        Ok(self.wait_for(css).await?.text().await?)
    }

    /// Waits until the first element matching `css` shows `expected`.
    pub async fn wait_for_text(&self, css: &str, expected: &str) -> Result<()> {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        let mut last = None;
        while Instant::now() < deadline {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                match element.text().await {
                    Ok(text) if text == expected => return Ok(()),
                    Ok(text) => last = Some(text),
                    Err(_) => {} // re-rendered between find and read
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("`{css}` never showed {expected:?}; last text: {last:?}")
    }

    /// Waits until exactly `count` elements match `css`.
    pub async fn wait_for_count(&self, css: &str, count: usize) -> Result<Vec<Element>> {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        let mut last = 0;
        while Instant::now() < deadline {
            // A failed lookup (the page is navigating) counts as not yet.
            if let Ok(found) = self.client.find_all(Locator::Css(css)).await {
                if found.len() == count {
                    return Ok(found);
                }
                last = found.len();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("expected {count} elements matching `{css}`, found {last}")
    }

    /// Waits until nothing matches `css`.
    pub async fn wait_for_absent(&self, css: &str) -> Result<()> {
        self.wait_for_count(css, 0).await.map(drop)
    }

    /// Replaces the value of the input matching `css` with `text`.
    pub async fn fill(&self, css: &str, text: &str) -> Result<()> {
        let input = self.wait_for(css).await?;
        input.clear().await?;
        input.send_keys(text).await?;
        Ok(())
    }

    /// Replaces the text of the SQL editor matching `css` (CodeMirror's
    /// editable element, or the plain text area when it could not load) by
    /// typing as a user does: select all, delete, type `text`.
    pub async fn fill_editor(&self, css: &str, text: &str) -> Result<()> {
        let editor = self.wait_for(css).await?;
        editor.click().await?;
        let select_all: String = [char::from(Key::Control), 'a', char::from(Key::Null)]
            .into_iter()
            .collect();
        editor.send_keys(&select_all).await?;
        editor
            .send_keys(&char::from(Key::Backspace).to_string())
            .await?;
        editor.send_keys(text).await?;
        Ok(())
    }

    /// The SQL editor's text (lines joined by `\n`).
    pub async fn editor_text(&self, css: &str) -> Result<String> {
        let editor = self.wait_for(css).await?;
        if let Some(value) = editor.prop("value").await? {
            return Ok(value);
        }
        Ok(editor.text().await?)
    }

    pub async fn click(&self, css: &str) -> Result<()> {
        self.wait_for(css).await?.click().await?;
        Ok(())
    }

    /// Saves a PNG of the viewport (handy when a test fails).
    pub async fn screenshot(&self, path: &Path) -> Result<()> {
        let png = self.client.screenshot().await?;
        std::fs::write(path, png)?;
        Ok(())
    }

    /// Reloads the page (like F5).
    pub async fn reload(&self) -> Result<()> {
        self.client.refresh().await.context("reloading the page")
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page and returns its value.
    pub async fn eval(
        &self,
        script: &str,
        args: Vec<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        self.client
            .execute(script, args)
            .await
            .with_context(|| format!("running script {script:?}"))
    }

    /// Like [`Browser::eval`] for a script that calls `arguments[arguments.length - 1]` when done.
    pub async fn eval_async(
        &self,
        script: &str,
        args: Vec<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        self.client
            .execute_async(script, args)
            .await
            .with_context(|| format!("running async script {script:?}"))
    }

    /// Waits until the first element matching `css` has attribute `name` = `expected`.
    pub async fn wait_for_attr(&self, css: &str, name: &str, expected: &str) -> Result<()> {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        let mut last = None;
        while Instant::now() < deadline {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                match element.attr(name).await {
                    Ok(Some(value)) if value == expected => return Ok(()),
                    Ok(value) => last = value,
                    Err(_) => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("`{css}` never had {name}={expected:?}; last: {last:?}")
    }

    /// The texts of every element matching `css`.
    pub async fn texts(&self, css: &str) -> Result<Vec<String>> {
        let mut texts = Vec::new();
        for element in self.client.find_all(Locator::Css(css)).await? {
            texts.push(element.text().await.unwrap_or_default());
        }
        Ok(texts)
    }

    /// Ends the WebDriver session (Chromium quits), then chromedriver.
    pub async fn close(self) -> Result<()> {
        self.client.close().await?;
        Ok(())
    }
}
