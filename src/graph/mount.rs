//! `RUN --mount=…` options read into a [`RunMount`], as BuildKit reads them:
//! at lowering when no value names a variable, else when the step runs, once
//! the stage's ENV and build args have expanded the values.

use super::{MountFile, RunMount, Sharing};

/// `key=value,…` split into its options (a bare `ro` has no value).
pub fn mount_fields(spec: &str) -> Vec<(String, Option<String>)> {
    spec.split(',')
        .filter(|f| !f.is_empty())
        .map(|field| field.split_once('=').map_or((field.to_string(), None), |(k, v)| (k.to_string(), Some(v.to_string()))))
        .collect()
}

/// Reads the options of one `--mount`; returns the mount and a `from=` to resolve.
pub fn parse_mount(fields: &[(String, Option<String>)]) -> Result<(RunMount, Option<String>), String> {
    let spec = fields.iter().map(|(k, v)| v.as_ref().map_or_else(|| k.clone(), |v| format!("{k}={v}"))).collect::<Vec<_>>().join(",");
    let mut kind = "bind".to_string();
    let (mut target, mut id, mut source, mut from, mut env) = (None, None, None, None, None);
    let (mut readonly, mut rw, mut required) = (false, false, false);
    let (mut sharing, mut file, mut size) = (None, MountFile::default(), None);
    for (key, value) in fields {
        let (key, value) = (key.as_str(), value.clone());
        let truthy = value.as_deref().is_none_or(|v| v == "true");
        let number = |radix: u32| {
            let text = value.as_deref().unwrap_or_default();
            u32::from_str_radix(text, radix).map_err(|_| format!("invalid value {text:?} for {key} in {spec:?}"))
        };
        match key {
            "type" => kind = value.unwrap_or_default(),
            // Empty (a variable that is unset) as not given: never a mount over the root.
            "target" | "dst" | "destination" => target = value.filter(|v| !v.is_empty()),
            "id" => id = value.filter(|v| !v.is_empty()),
            "source" | "src" => source = value,
            "from" => from = value,
            "env" => env = value,
            "ro" | "readonly" => readonly = truthy,
            "rw" | "readwrite" => rw = truthy,
            "required" => required = truthy,
            "sharing" => {
                sharing = Some(match value.as_deref().unwrap_or_default().to_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    other => return Err(format!("unsupported sharing value {other:?} in {spec:?} (shared, private or locked)")),
                })
            }
            "mode" => {
                let mode = number(8)?;
                if mode > 0o7777 {
                    return Err(format!("invalid value for mode in {spec:?}: at most 7777"));
                }
                file.mode = Some(mode);
            }
            "uid" => file.uid = Some(number(10)?),
            "gid" => file.gid = Some(number(10)?),
            "size" => size = Some(byte_size(value.as_deref().unwrap_or_default()).ok_or(format!("invalid value for size in {spec:?}"))?),
            other => return Err(format!("unknown option {other:?} in {spec:?}")),
        }
    }
    // As BuildKit: each option only where it means something.
    if !file.is_unset() && !matches!(kind.as_str(), "cache" | "secret" | "ssh") {
        return Err(format!("mode, uid and gid are not allowed for type={kind} mounts (only cache, secret and ssh)"));
    }
    if sharing.is_some() && kind != "cache" {
        return Err(format!("sharing is not allowed for type={kind} mounts (only cache)"));
    }
    if size.is_some() && kind != "tmpfs" {
        return Err(format!("size is not allowed for type={kind} mounts (only tmpfs)"));
    }
    if required && !matches!(kind.as_str(), "secret" | "ssh") {
        return Err(format!("required is not allowed for type={kind} mounts (only secret and ssh)"));
    }
    if env.is_some() && kind != "secret" {
        return Err(format!("env is not allowed for type={kind} mounts (only secret)"));
    }
    let mount = match kind.as_str() {
        "cache" => {
            let target = target.ok_or("type=cache needs target=")?;
            RunMount::Cache { id: id.unwrap_or_else(|| target.clone()), target, readonly, sharing: sharing.unwrap_or_default(), file }
        }
        "bind" => {
            let target = target.ok_or("type=bind needs target=")?;
            RunMount::Bind { from: None, source: source.unwrap_or_else(|| "/".into()), target, rw }
        }
        "secret" => {
            let id =
                id.or_else(|| target.as_ref().and_then(|t| t.rsplit('/').next().map(str::to_string))).ok_or("type=secret needs id=")?;
            // As BuildKit: a secret given as a variable is a file too only when a target is named.
            let target = match (target, &env) {
                (None, None) => Some(format!("/run/secrets/{id}")),
                (target, _) => target,
            };
            RunMount::Secret { id, target, env, required, file }
        }
        "ssh" => RunMount::Ssh { id: id.unwrap_or_else(|| "default".into()), target, required, file },
        "tmpfs" => RunMount::Tmpfs { target: target.ok_or("type=tmpfs needs target=")?, size },
        other => return Err(format!("unknown mount type {other:?} (cache, bind, secret, ssh or tmpfs)")),
    };
    Ok((mount, from))
}

/// A size as BuildKit reads `size=` (Docker's RAMInBytes): a number with an
/// optional binary unit, `k`, `m`, `g`, `t` or `p`, optionally followed by `b`
/// or `ib`, in any case (`128m` is 128 MiB).
fn byte_size(text: &str) -> Option<u64> {
    let lower = text.trim().to_lowercase();
    let digits = lower.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits);
    let shift = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return None,
    };
    let value = number.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)?;
    let bytes = value * (1u64 << shift) as f64;
    (bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> Result<(RunMount, Option<String>), String> {
        parse_mount(&mount_fields(spec))
    }

    #[test]
    fn mounts_parse_with_buildkit_keys() {
        let (m, _) = parse("type=cache,target=/root/.cache,id=pip").unwrap();
        assert_eq!(
            m,
            RunMount::Cache {
                id: "pip".into(),
                target: "/root/.cache".into(),
                readonly: false,
                sharing: Sharing::Shared,
                file: MountFile::default()
            }
        );
        let (m, _) = parse("type=cache,target=/c,sharing=locked,mode=0751,uid=1001,gid=1002").unwrap();
        assert_eq!(
            m,
            RunMount::Cache {
                id: "/c".into(),
                target: "/c".into(),
                readonly: false,
                sharing: Sharing::Locked,
                file: MountFile { mode: Some(0o751), uid: Some(1001), gid: Some(1002) }
            }
        );
        let (m, _) = parse("type=tmpfs,target=/t,size=128m").unwrap();
        assert_eq!(m, RunMount::Tmpfs { target: "/t".into(), size: Some(128 << 20) });
        assert_eq!(byte_size("64KiB"), Some(64 << 10));
        assert_eq!(byte_size("1000"), Some(1000));
        assert_eq!(byte_size("1x"), None);
        for bad in [
            "type=bind,target=/b,uid=1",
            "type=tmpfs,target=/t,mode=700",
            "type=secret,id=a,sharing=locked",
            "type=cache,target=/c,size=1m",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("type=cache,target=/c,sharing=sometimes").unwrap_err().contains("sometimes"));
        assert!(parse("type=cache,target=/c,mode=9").is_err());
        let (m, from) = parse("type=bind,from=build,source=/out,target=/in").unwrap();
        assert_eq!(from.as_deref(), Some("build"));
        assert!(matches!(m, RunMount::Bind { .. }));
        assert!(parse("type=nfs,target=/x").is_err());
        assert!(parse("type=cache,target=").unwrap_err().contains("needs target"));
    }

    #[test]
    fn a_secret_as_env_is_a_file_only_with_a_target() {
        let env = Some("TOKEN".to_string());
        let (m, _) = parse("type=secret,id=tok,env=TOKEN").unwrap();
        assert_eq!(m, RunMount::Secret { id: "tok".into(), target: None, env: env.clone(), required: false, file: MountFile::default() });
        let (m, _) = parse("type=secret,id=tok,target=/s/at,env=TOKEN").unwrap();
        assert_eq!(
            m,
            RunMount::Secret { id: "tok".into(), target: Some("/s/at".into()), env, required: false, file: MountFile::default() }
        );
        let (m, _) = parse("type=secret,id=tok").unwrap();
        assert!(matches!(m, RunMount::Secret { target: Some(t), env: None, .. } if t == "/run/secrets/tok"));
        assert!(parse("type=cache,target=/c,env=X").unwrap_err().contains("env is not allowed"));
    }
}
