//! The image: busybox-static's binary and its applets as a tarball, built once
//! per busybox build and cached.

use super::*;

/// Where the image tarball is cached: `$KOLACH_CACHE_DIR`, else `cache` in the
/// cargo target dir the running executable lives in, else `kolach-cache` in
/// the temp dir.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KOLACH_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Ok(exe) = std::env::current_exe() {
        // target/debug/deps/<test> or target/debug/<bin>: the dir above `debug`.
        if let Some(target) = exe
            .ancestors()
            .find(|a| a.join("CACHEDIR.TAG").is_file() || a.ends_with("target"))
        {
            return target.join("cache");
        }
    }
    std::env::temp_dir().join("kolach-cache")
}

/// 64-bit FNV-1a, to name the cached tarball after the busybox it holds.
pub(super) fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Builds (once per busybox build; cached under `cache_dir`) the rootfs
/// tarball of the test image: `/bin/busybox` of busybox-static, a symlink per
/// applet (`sh`, `ping`, `ip`, `sleep`, `nc`, `httpd`, ...), `/etc/passwd` and
/// `/etc/group` with root, and the usual empty dirs. Returns its path.
pub fn busybox_image_tar(cache_dir: &Path) -> Result<PathBuf> {
    let bin = fs::read(BUSYBOX).with_context(|| {
        format!("reading {BUSYBOX} (Debian package busybox-static; apt-get install busybox-static)")
    })?;
    let tar = cache_dir.join(format!("kolach-busybox-{:016x}.tar", fnv1a(&bin)));
    if tar.is_file() {
        return Ok(tar);
    }
    fs::create_dir_all(cache_dir).with_context(|| format!("creating {}", cache_dir.display()))?;
    // Built beside the result and renamed into place: concurrent test
    // processes each build their own and the last rename wins, complete.
    let work = cache_dir.join(format!("kolach-busybox-build-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    let rootfs = work.join("rootfs");
    let result = (|| -> Result<()> {
        for d in [
            "bin", "etc", "proc", "sys", "dev", "tmp", "root", "run", "var",
        ] {
            fs::create_dir_all(rootfs.join(d))?;
        }
        let busybox = rootfs.join("bin/busybox");
        fs::write(&busybox, &bin)?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&busybox, fs::Permissions::from_mode(0o755))?;
        let applets = cmd::run_ok(BUSYBOX, &["--list"])?;
        for applet in applets.lines().map(str::trim) {
            if applet.is_empty() || applet == "busybox" || applet.contains('/') {
                continue;
            }
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
        }
        fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
        fs::write(rootfs.join("etc/group"), "root:x:0:\n")?;
        let partial = work.join("image.tar");
        let (r, p) = (rootfs.display().to_string(), partial.display().to_string());
        cmd::run_ok(
            "tar",
            &[
                "--numeric-owner",
                "--owner=0",
                "--group=0",
                "--sort=name",
                "--mtime=@0",
                "-C",
                &r,
                "-cf",
                &p,
                ".",
            ],
        )?;
        fs::rename(&partial, &tar)?;
        Ok(())
    })();
    let _ = fs::remove_dir_all(&work);
    result.with_context(|| format!("building the busybox image tarball {}", tar.display()))?;
    Ok(tar)
}
