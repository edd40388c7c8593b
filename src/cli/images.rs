//! The image verbs: listing, history, inspect, tag, rm, df, prune, save, load.

use super::failed;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::ExitCode;

use miette::miette;
use serde_json::json;

use super::args::{HistoryArgs, ImagesArgs, LoadArgs, RmArgs, SaveArgs, SaveFormat};
use super::table::Table;
use strata::oci::{Digest, ImageRef};
use strata::store::{Store, StoredImage};

/// Sizes as Docker prints them: decimal units, four significant digits.
pub fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    let text = format!("{value:.4}");
    let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text };
    // Four significant digits, as Go's %.4g.
    let digits: usize = text.chars().filter(|c| c.is_ascii_digit()).count();
    let text = if digits > 4 {
        let int_len = text.split('.').next().map_or(0, str::len);
        format!("{value:.prec$}", prec = 4usize.saturating_sub(int_len))
    } else {
        text
    };
    format!("{text}{}", units[unit])
}

/// "2 minutes ago", as Docker words it.
pub fn human_age(created: Option<&str>) -> String {
    let Some(time) = created.and_then(|c| time::OffsetDateTime::parse(c, &time::format_description::well_known::Rfc3339).ok()) else {
        return "N/A".into();
    };
    let secs = (time::OffsetDateTime::now_utc() - time).whole_seconds().max(0);
    // As Docker's HumanDuration: hours round to the nearest, the rest truncate.
    let (minutes, hours) = (secs / 60, (secs + 1800) / 3600);
    let text = match secs {
        0 => "Less than a second".to_string(),
        1 => "1 second".to_string(),
        2..=59 => format!("{secs} seconds"),
        _ if minutes == 1 => "About a minute".to_string(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_string(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", secs / 3600 / 24 / 365),
    };
    format!("{text} ago")
}

fn images(store: &Store) -> miette::Result<Vec<StoredImage>> {
    let mut out = Vec::new();
    for (tag, descriptor) in store.entries().map_err(miette::Report::from_err)? {
        out.push(store.load_image(tag, descriptor).map_err(miette::Report::from_err)?);
    }
    Ok(out)
}

/// Each layer's uncompressed size, as Docker counts an image's size.
fn layer_sizes(store: &Store, image: &StoredImage) -> miette::Result<Vec<u64>> {
    let layers = image.manifest.layers.iter().zip(&image.config.rootfs.diff_ids);
    layers.map(|(layer, diff_id)| store.uncompressed_size(layer, diff_id).map_err(miette::Report::from_err)).collect()
}

fn image_size(store: &Store, image: &StoredImage) -> miette::Result<u64> {
    Ok(layer_sizes(store, image)?.iter().sum())
}

fn split_tag(tag: &str) -> (&str, &str) {
    tag.rsplit_once(':').filter(|(_, t)| !t.contains('/')).unwrap_or((tag, "latest"))
}

fn glob_matches(pattern: &str, tag: &str) -> bool {
    let (name, _) = split_tag(tag);
    let build = |p: &str| globset::GlobBuilder::new(p).literal_separator(true).build().map(|g| g.compile_matcher());
    match build(pattern) {
        Ok(m) => m.is_match(tag) || m.is_match(name),
        Err(_) => false,
    }
}

pub fn list(store: &Store, args: &ImagesArgs) -> miette::Result<ExitCode> {
    let filters = super::containers::parse_filters(&args.filter)?;
    let all = images(store)?;
    let created_of = |name: &str| -> miette::Result<Option<String>> { Ok(resolve(store, name)?.config.created) };
    let mut rows = Vec::new();
    for image in &all {
        if let Some(pattern) = &args.pattern {
            match &image.tag {
                Some(tag) if glob_matches(pattern, tag) => {}
                _ => continue,
            }
        }
        let mut pass = true;
        for (key, value) in &filters {
            pass &= match key.as_str() {
                "dangling" => image.tag.is_none() == (value == "true"),
                "reference" => image.tag.as_deref().is_some_and(|tag| glob_matches(value, tag)),
                "before" => image.config.created.as_deref() < created_of(value)?.as_deref(),
                "since" => image.config.created.as_deref() > created_of(value)?.as_deref(),
                "label" => {
                    let labels = &image.config.config.labels;
                    match value.split_once('=') {
                        Some((k, v)) => labels.get(k).is_some_and(|l| l == v),
                        None => labels.contains_key(value.as_str()),
                    }
                }
                other => return Err(miette!("--filter {other}: expected dangling, reference, before, since or label")),
            };
        }
        if pass {
            rows.push(image);
        }
    }
    if args.quiet {
        let mut seen = HashSet::new();
        for image in &rows {
            if seen.insert(image.id().clone()) {
                println!("{}", image.id().short());
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut values = Vec::new();
    for image in rows {
        let (repo, tag) = match &image.tag {
            Some(t) => split_tag(t),
            None => ("<none>", "<none>"),
        };
        values.push(json!({
            "Repository": repo,
            "Tag": tag,
            "ID": image.id().short(),
            "Digest": image.manifest_descriptor.digest,
            "CreatedSince": human_age(image.config.created.as_deref()),
            "CreatedAt": image.config.created,
            "Size": human_size(image_size(store, image)?),
        }));
    }
    let format = match args.format.as_deref() {
        None | Some("table") => "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}",
        Some(format) => format,
    };
    let headers = [("ID", "IMAGE ID"), ("CreatedSince", "CREATED"), ("CreatedAt", "CREATED AT")];
    super::format::print_rows(format, &values, &headers).map_err(miette::Report::from_err)?;
    Ok(ExitCode::SUCCESS)
}

fn resolve(store: &Store, name: &str) -> miette::Result<StoredImage> {
    store.resolve(name).map_err(miette::Report::from_err)
}

pub fn history(store: &Store, args: &HistoryArgs) -> miette::Result<ExitCode> {
    let (name, no_trunc) = (&args.image, args.no_trunc);
    let image = resolve(store, name)?;
    let mut rows = Vec::new();
    let mut sizes = layer_sizes(store, &image)?.into_iter().rev();
    let layered = image.config.history.iter().filter(|h| !h.empty_layer).count();
    // Entries beyond the layers (images that lost history) show no size.
    let mut extra = layered.saturating_sub(image.manifest.layers.len());
    for (i, entry) in image.config.history.iter().enumerate().rev() {
        let id = if i + 1 == image.config.history.len() { image.id().short().to_string() } else { "<missing>".into() };
        let size = if entry.empty_layer {
            0
        } else if extra > 0 {
            extra -= 1;
            0
        } else {
            sizes.next().unwrap_or(0)
        };
        // One row per entry: tabs become spaces (as Docker) and a heredoc's newlines show as `\n`.
        let by = entry.created_by.as_deref().unwrap_or_default().replace('\t', " ").replace('\n', "\\n");
        let by = if !no_trunc && by.chars().count() > 45 { format!("{}…", by.chars().take(44).collect::<String>()) } else { by };
        rows.push(json!({
            "ID": id,
            "CreatedSince": human_age(entry.created.as_deref()),
            "CreatedAt": entry.created,
            "CreatedBy": by,
            "Size": human_size(size),
            "Comment": entry.comment.clone().unwrap_or_default(),
        }));
    }
    let format = match args.format.as_deref() {
        None | Some("table") => "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}",
        Some(format) => format,
    };
    let headers = [("ID", "IMAGE"), ("CreatedSince", "CREATED"), ("CreatedBy", "CREATED BY"), ("CreatedAt", "CREATED AT")];
    super::format::print_rows(format, &rows, &headers).map_err(miette::Report::from_err)?;
    Ok(ExitCode::SUCCESS)
}

pub fn inspect(store: &Store, names: &[String], format: Option<&str>) -> miette::Result<ExitCode> {
    let mut out = Vec::new();
    for name in names {
        out.push(image_json(store, name)?);
    }
    match format {
        Some(format) => {
            for value in &out {
                println!("{}", super::format::render_one(format, value).map_err(miette::Report::from_err)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default()),
    }
    Ok(ExitCode::SUCCESS)
}

/// An image as `inspect` prints it, with Docker's field names.
pub(super) fn image_json(store: &Store, name: &str) -> miette::Result<serde_json::Value> {
    let all = images(store)?;
    {
        let image = resolve(store, name)?;
        let same: Vec<&StoredImage> = all.iter().filter(|i| i.id() == image.id()).collect();
        let tags: Vec<String> = same.iter().filter_map(|i| i.tag.clone()).collect();
        let mut repo_digests: Vec<String> = same.iter().flat_map(|i| strata::registry::repo_digests(i)).collect();
        repo_digests.sort();
        repo_digests.dedup();
        let c = &image.config;
        Ok(json!({
            "Id": image.id(),
            "RepoTags": tags,
            "RepoDigests": repo_digests,
            "ManifestDigest": image.manifest_descriptor.digest,
            "Created": c.created,
            "Author": c.author.clone().unwrap_or_default(),
            "Config": c.config,
            "Architecture": c.architecture,
            "Os": c.os,
            "Size": image_size(store, &image)?,
            "RootFS": { "Type": c.rootfs.kind, "Layers": c.rootfs.diff_ids },
            "History": c.history,
        }))
    }
}

pub fn tag(store: &Store, source: &str, target: &str) -> miette::Result<ExitCode> {
    let image = resolve(store, source)?;
    let target: ImageRef = target.parse().map_err(miette::Report::from_err)?;
    store.set_tag(&target, &image.manifest_descriptor).map_err(miette::Report::from_err)?;
    Ok(ExitCode::SUCCESS)
}

pub fn remove(store: &Store, args: &RmArgs) -> miette::Result<ExitCode> {
    for name in &args.images {
        let by_tag = name.parse::<ImageRef>().ok().map(|r| r.to_string());
        let entries = store.entries().map_err(miette::Report::from_err)?;
        if let Some(tag) = by_tag.filter(|t| entries.iter().any(|(n, _)| n.as_deref() == Some(t))) {
            store.remove_entries(|n, _| n == Some(tag.as_str())).map_err(miette::Report::from_err)?;
            println!("Untagged: {tag}");
            continue;
        }
        let image = resolve(store, name)?;
        let manifest = image.manifest_descriptor.digest.clone();
        let tags: Vec<String> = entries.iter().filter(|(_, d)| d.digest == manifest).filter_map(|(t, _)| t.clone()).collect();
        if tags.len() > 1 && !args.force {
            return Err(miette!(
                "image {} is referenced by several tags ({}); remove them by name or use -f",
                image.id().short(),
                tags.join(", ")
            ));
        }
        store.remove_entries(|_, d| d.digest == manifest).map_err(miette::Report::from_err)?;
        for tag in tags {
            println!("Untagged: {tag}");
        }
        println!("Deleted: {}", image.id());
    }
    let freed = store.gc().map_err(miette::Report::from_err)?;
    if freed > 0 {
        println!("Freed: {}", human_size(freed));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn df(store: &Store, verbose: bool) -> miette::Result<ExitCode> {
    let all = images(store)?;
    let mut layer_users: HashMap<Digest, (u64, usize)> = HashMap::new();
    let mut unique_images = BTreeMap::new();
    for image in &all {
        unique_images.insert(image.id().clone(), image);
    }
    for image in unique_images.values() {
        for (layer, size) in image.manifest.layers.iter().zip(layer_sizes(store, image)?) {
            layer_users.entry(layer.digest.clone()).or_insert((size, 0)).1 += 1;
        }
    }
    let logical: u64 = unique_images.values().map(|i| image_size(store, i)).sum::<miette::Result<u64>>()?;
    let actual: u64 = layer_users.values().map(|(size, _)| size).sum();
    let image_layers: HashSet<&Digest> = layer_users.keys().collect();
    let cache = store.cache_entries().map_err(miette::Report::from_err)?;
    let mut cache_only = HashSet::new();
    let mut cache_size = 0;
    for entry in &cache {
        if let Some(d) = &entry.diff_id
            && !image_layers.contains(d)
            && cache_only.insert(d.clone())
        {
            cache_size += entry.size;
        }
    }
    let snapshots = store.snapshots().map_err(miette::Report::from_err)?;
    let in_use = strata::runtime::layers_in_use(store).map_err(miette::Report::from_err)?;
    let snapshot_size: u64 = snapshots.iter().map(|(_, _, size)| size).sum();
    // What `system prune` would free: every snapshot no kept run stands on.
    let snapshot_reclaimable: u64 =
        snapshots.iter().filter(|(diff_id, _, _)| !diff_id.as_ref().is_some_and(|d| in_use.contains(d))).map(|(_, _, size)| size).sum();
    let mut table = Table::new(&["TYPE", "TOTAL", "SIZE", "LOGICAL SIZE", "RECLAIMABLE"]);
    let dangling = all.iter().filter(|i| i.tag.is_none()).count();
    table.row(vec![
        "Images".into(),
        unique_images.len().to_string(),
        human_size(actual),
        human_size(logical),
        format!("{dangling} untagged"),
    ]);
    let cache_sz = human_size(cache_size);
    table.row(vec!["Build Cache".into(), cache.len().to_string(), cache_sz.clone(), cache_sz.clone(), cache_sz]);
    let snap = human_size(snapshot_size);
    table.row(vec!["Snapshots".into(), snapshots.len().to_string(), snap.clone(), snap, human_size(snapshot_reclaimable)]);
    table.print();
    if verbose {
        println!();
        let mut table = Table::new(&["REPOSITORY", "TAG", "IMAGE ID", "SIZE", "SHARED SIZE", "UNIQUE SIZE"]);
        for image in &all {
            let (repo, tag) = image.tag.as_deref().map(split_tag).unwrap_or(("<none>", "<none>"));
            let shared: u64 =
                image.manifest.layers.iter().filter_map(|l| layer_users.get(&l.digest).filter(|u| u.1 > 1)).map(|u| u.0).sum();
            let size = image_size(store, image)?;
            table.row(vec![
                repo.to_string(),
                tag.to_string(),
                image.id().short().to_string(),
                human_size(size),
                human_size(shared),
                human_size(size - shared),
            ]);
        }
        table.print();
    }
    Ok(ExitCode::SUCCESS)
}

pub fn prune(store: &Store) -> miette::Result<ExitCode> {
    let untagged = store.remove_entries(|tag, _| tag.is_none()).map_err(miette::Report::from_err)?;
    let cleared = store.cache_clear().map_err(miette::Report::from_err)?;
    let mut freed = store.gc().map_err(miette::Report::from_err)?;
    // Snapshots are unpacked copies of layers, remade when a build needs them; keep only those kept runs stand on.
    let in_use = strata::runtime::layers_in_use(store).map_err(miette::Report::from_err)?;
    freed += store.prune_snapshots(&in_use).map_err(miette::Report::from_err)?;
    println!("Deleted {untagged} untagged images and {cleared} build cache entries");
    println!("Total reclaimed space: {}", human_size(freed));
    Ok(ExitCode::SUCCESS)
}

pub fn save(store: &Store, args: &SaveArgs) -> miette::Result<ExitCode> {
    if args.images.is_empty() {
        return Err(miette!("save: name at least one image"));
    }
    let mut chosen = Vec::new();
    for name in &args.images {
        let mut image = resolve(store, name)?;
        if image.tag.is_none() && name.parse::<ImageRef>().is_ok() && !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            image.tag = Some(name.parse::<ImageRef>().map(|r| r.to_string()).unwrap_or_default());
        }
        chosen.push(image);
    }
    let format = match args.format {
        SaveFormat::Oci => strata::store::archive::Format::Oci,
        SaveFormat::Docker => strata::store::archive::Format::Docker,
    };
    strata::store::archive::save(store, &chosen, &args.output, format)
        .map_err(|e| failed(e, format!("save to {}", args.output.display())))?;
    Ok(ExitCode::SUCCESS)
}

pub fn load(store: &Store, args: &LoadArgs) -> miette::Result<ExitCode> {
    let tag = match &args.tag {
        Some(t) => Some(t.parse::<ImageRef>().map_err(|e| failed(e, format!("-t {t}")))?),
        None => None,
    };
    let loaded =
        strata::store::archive::load(store, &args.input, tag.as_ref()).map_err(|e| failed(e, format!("load {}", args.input.display())))?;
    for (name, id) in loaded {
        match name {
            Some(name) => println!("Loaded image: {name}"),
            None => println!("Loaded image ID: {id}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_dockers() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1234), "1.234kB");
        assert_eq!(human_size(2_100_000), "2.1MB");
        assert_eq!(human_size(123_456_789), "123.5MB");
    }

    fn ago(secs: i64) -> String {
        let then = time::OffsetDateTime::now_utc() - time::Duration::seconds(secs);
        human_age(Some(&then.format(&time::format_description::well_known::Rfc3339).expect("format")))
    }

    #[test]
    fn ages_read_as_docker_prints_them() {
        assert_eq!(ago(1), "1 second ago");
        assert_eq!(ago(2), "2 seconds ago");
        assert_eq!(ago(90), "About a minute ago");
        assert_eq!(ago(150), "2 minutes ago");
        assert_eq!(ago(3700), "About an hour ago");
        assert_eq!(ago(5500), "2 hours ago");
        assert_eq!(ago(3 * 86_400), "3 days ago");
        assert_eq!(ago(3 * 365 * 86_400), "3 years ago");
        assert_eq!(human_age(None), "N/A");
    }
}
