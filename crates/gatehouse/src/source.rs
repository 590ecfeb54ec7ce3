//! The file source: `--config` files and directories read into resources, as the API server
//! would store them (defaulted, validated), with every problem named by file and document.

use std::{
    collections::BTreeMap,
    hash::{DefaultHasher, Hash, Hasher},
    path::{Path, PathBuf},
};

use api::Resource;
use serde::Serialize;
use translate::store::{ObjKey, Object, Source};

/// A document that could not be used, as `/status` and `check` report it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConfigError {
    pub file: String,
    /// 1-based; absent when the whole file could not be read or parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    /// `Kind namespace/name`, when the document got that far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(d) = self.document {
            write!(f, " (document {d})")?;
        }
        if let Some(o) = &self.object {
            write!(f, " {o}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// One read of every file.
#[derive(Debug, Default)]
pub struct Reading {
    pub objects: Vec<Object>,
    /// Resources that were present but invalid this time; the store keeps their last good version.
    pub rejected: Vec<ObjKey>,
    pub errors: Vec<ConfigError>,
    /// A hash of every file's path and content: equal hashes mean nothing changed.
    pub fingerprint: u64,
}

/// Reads `--config` paths, keeping each file's last parsable content so that a file caught
/// half-written, or broken by an edit, does not take its resources away.
#[derive(Debug, Default)]
pub struct FileSource {
    paths: Vec<PathBuf>,
    last_good: BTreeMap<PathBuf, String>,
}

impl FileSource {
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self { paths, last_good: BTreeMap::new() }
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    pub fn read(&mut self) -> Reading {
        let mut reading = Reading::default();
        let mut hasher = DefaultHasher::new();
        let mut files = Vec::new();
        for path in &self.paths {
            if let Err(e) = collect(path, &mut files) {
                reading.errors.push(ConfigError {
                    file: path.display().to_string(),
                    document: None,
                    object: None,
                    message: e.to_string(),
                });
            }
        }
        files.sort();
        files.dedup();
        let mut seen: BTreeMap<ObjKey, Source> = BTreeMap::new();
        let mut by_key: BTreeMap<ObjKey, Object> = BTreeMap::new();
        let mut still_present = BTreeMap::new();
        for file in files {
            let name = file.display().to_string();
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    reading.errors.push(ConfigError {
                        file: name,
                        document: None,
                        object: None,
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            name.hash(&mut hasher);
            text.hash(&mut hasher);
            let docs = match parse_documents(&text) {
                Ok(docs) => {
                    self.last_good.insert(file.clone(), text);
                    docs
                }
                Err(message) => {
                    reading.errors.push(ConfigError { file: name.clone(), document: None, object: None, message });
                    // Serve what the file held when it last parsed.
                    match self.last_good.get(&file).map(|t| parse_documents(t)) {
                        Some(Ok(docs)) => docs,
                        _ => continue,
                    }
                }
            };
            still_present.insert(file.clone(), ());
            for (index, doc) in docs.into_iter().enumerate() {
                let document = index + 1;
                let source = Source { file: name.clone(), document };
                let api_version = doc.get("apiVersion").and_then(|v| v.as_str()).unwrap_or_default().to_string();
                let kind = doc.get("kind").and_then(|v| v.as_str()).unwrap_or_default().to_string();
                let label = object_label(&doc);
                let resource = match Resource::from_json(doc) {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        tracing::debug!(file = %name, document, %api_version, %kind, "ignoring a kind gatehouse does not read");
                        continue;
                    }
                    Err(e) => {
                        reading.errors.push(ConfigError {
                            file: name.clone(),
                            document: Some(document),
                            object: label,
                            message: e.to_string(),
                        });
                        continue;
                    }
                };
                let key = ObjKey::of(&resource);
                let problems = api::validate::validate(&resource);
                if !problems.is_empty() {
                    reading.errors.push(ConfigError {
                        file: name.clone(),
                        document: Some(document),
                        object: Some(key.to_string()),
                        message: problems.join("; "),
                    });
                    reading.rejected.push(key);
                    continue;
                }
                if let Some(previous) = seen.insert(key.clone(), source.clone()) {
                    tracing::warn!(%key, first = %previous, second = %source, "the same resource is defined twice; the later one wins");
                }
                by_key.insert(key, Object { api_version, resource, source });
            }
        }
        self.last_good.retain(|f, _| still_present.contains_key(f));
        reading.objects = by_key.into_values().collect();
        reading.fingerprint = hasher.finish();
        reading
    }
}

fn object_label(doc: &serde_json::Value) -> Option<String> {
    let kind = doc.get("kind")?.as_str()?;
    let meta = doc.get("metadata")?;
    let name = meta.get("name")?.as_str()?;
    Some(match meta.get("namespace").and_then(|n| n.as_str()) {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    })
}

/// Every document of a YAML stream, empty ones left out.
fn parse_documents(text: &str) -> Result<Vec<serde_json::Value>, String> {
    // The parser's first line names the line and column; the source snippet after it would
    // only repeat the file in logs and in `/status`.
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(text)
        .map_err(|e| e.to_string().lines().next().unwrap_or_default().trim_start_matches("error: ").to_string())?;
    docs.into_iter()
        .filter(|d| !d.is_null())
        .map(|d| if d.is_object() { Ok(d) } else { Err("a document must be a mapping".to_string()) })
        .collect()
}

/// `*.yaml` and `*.yml` files under `path`, recursively; names starting with `.` are skipped.
fn collect(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let p = entry.path();
        let hidden = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            collect(&p, out)?;
        } else if p.extension().and_then(|e| e.to_str()).is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
    Ok(())
}
