//! The Temporal descriptor set: the `google.protobuf.FileDescriptorSet` that tells Strait what the
//! messages of WorkflowService, OperatorService and AdminService look like.
//!
//! A set built from the pinned Temporal server (`descriptors/temporal.binpb`, made by
//! `scripts/update-descriptors.sh`) is embedded in the binary; another release's set can be loaded
//! from a file. Either way it is decoded into a [`DescriptorPool`] and must define every service in
//! [`REQUIRED_SERVICES`].
//!
//! The Temporal version a set was dumped from is kept next to it, in a text file of the same stem
//! with the extension `.version` (`temporal.binpb` → `temporal.version`), written by
//! `strait descriptors dump`. A set without one reports its version as unknown.
//!
//! A pure relay never needs the pool, only the service and method names (for metric labels):
//! [`method_names`] reads just those from the set's bytes.

use std::fmt;
use std::path::{Path, PathBuf};

use prost_reflect::DescriptorPool;

/// The set dumped from the pinned Temporal server.
pub const EMBEDDED: &[u8] = include_bytes!("../descriptors/temporal.binpb");
/// The Temporal server version [`EMBEDDED`] was dumped from.
const EMBEDDED_VERSION: &str = include_str!("../descriptors/temporal.version");

/// Services a descriptor set must define: the ones whose files (and everything they import) are
/// dumped into Strait's own set.
pub const REQUIRED_SERVICES: [&str; 3] = [
    "temporal.api.workflowservice.v1.WorkflowService",
    "temporal.api.operatorservice.v1.OperatorService",
    "temporal.server.api.adminservice.v1.AdminService",
];

/// Longest accepted version file.
const MAX_VERSION_LEN: usize = 100;

/// Where a set came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Embedded,
    File(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Embedded => f.write_str("embedded descriptor set"),
            Origin::File(path) => write!(f, "descriptor set {}", path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: not a valid FileDescriptorSet: {source}")]
    Decode {
        origin: Origin,
        source: Box<prost_reflect::DescriptorError>,
    },
    #[error("{origin}: no service {service} (a descriptor set for Strait must define {})", REQUIRED_SERVICES.join(", "))]
    MissingService { origin: Origin, service: String },
    #[error("{origin}: not a valid FileDescriptorSet: {source}")]
    DecodeNames {
        origin: Origin,
        source: prost::DecodeError,
    },
    #[error("{}: not a version (expected one short line such as \"1.32.0\")", .path.display())]
    BadVersion { path: PathBuf },
    #[error("{}: a descriptor set may not itself end in .version", .path.display())]
    OutputPath { path: PathBuf },
}

/// A decoded, checked descriptor set.
#[derive(Debug, Clone)]
pub struct Descriptors {
    pool: DescriptorPool,
    version: Option<String>,
    origin: Origin,
    size: usize,
}

impl Descriptors {
    /// The embedded set.
    pub fn embedded() -> Result<Self, DescriptorError> {
        Self::from_bytes(EMBEDDED, parse_version(EMBEDDED_VERSION), Origin::Embedded)
    }

    /// A set from a file, with the version from its `.version` file if there is one.
    pub(crate) fn load(path: &Path) -> Result<Self, DescriptorError> {
        let bytes = std::fs::read(path).map_err(|source| DescriptorError::Read {
            path: path.to_owned(),
            source,
        })?;
        let version = read_version(&version_path(path))?;
        Self::from_bytes(&bytes, version, Origin::File(path.to_owned()))
    }

    /// The embedded set, or the file's when `path` is given.
    pub fn embedded_or_load(path: Option<&Path>) -> Result<Self, DescriptorError> {
        match path {
            Some(path) => Self::load(path),
            None => Self::embedded(),
        }
    }

    /// Decodes a serialized `FileDescriptorSet` and checks it defines [`REQUIRED_SERVICES`].
    pub fn from_bytes(
        bytes: &[u8],
        version: Option<String>,
        origin: Origin,
    ) -> Result<Self, DescriptorError> {
        let pool = DescriptorPool::decode(bytes).map_err(|source| DescriptorError::Decode {
            origin: origin.clone(),
            source: Box::new(source),
        })?;
        if let Some(service) = REQUIRED_SERVICES
            .iter()
            .find(|s| pool.get_service_by_name(s).is_none())
        {
            return Err(DescriptorError::MissingService {
                origin,
                service: (*service).to_owned(),
            });
        }
        Ok(Self {
            pool,
            version,
            origin,
            size: bytes.len(),
        })
    }

    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    pub(crate) fn into_pool(self) -> DescriptorPool {
        self.pool
    }

    /// The Temporal server version the set was dumped from, if known.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Every service's full name and method names.
    pub(crate) fn method_names(&self) -> MethodNames {
        self.pool
            .services()
            .map(|s| {
                let methods = s.methods().map(|m| m.name().to_owned()).collect();
                (s.full_name().to_owned(), methods)
            })
            .collect()
    }

    pub fn summary(&self) -> Summary {
        let mut services: Vec<ServiceSummary> = self
            .pool
            .services()
            .map(|s| ServiceSummary {
                name: s.full_name().to_owned(),
                methods: s.methods().len(),
            })
            .collect();
        services.sort_by(|a, b| a.name.cmp(&b.name));
        Summary {
            origin: self.origin.clone(),
            version: self.version.clone(),
            files: self.pool.files().len(),
            bytes: self.size,
            methods: services.iter().map(|s| s.methods).sum(),
            services,
            messages: self
                .pool
                .all_messages()
                .filter(|m| !m.is_map_entry())
                .count(),
            enums: self.pool.all_enums().count(),
        }
    }
}

/// (full service name, method names) of every service of a set.
pub(crate) type MethodNames = Vec<(String, Vec<String>)>;

/// Just enough of `google.protobuf.FileDescriptorSet` to list services and methods: prost skips
/// every other field by its length, so nothing else is decoded or kept.
mod names_only {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct FileDescriptorSet {
        #[prost(message, repeated, tag = "1")]
        pub(crate) file: Vec<FileDescriptorProto>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct FileDescriptorProto {
        #[prost(string, optional, tag = "2")]
        pub(crate) package: Option<String>,
        #[prost(message, repeated, tag = "6")]
        pub(crate) service: Vec<ServiceDescriptorProto>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct ServiceDescriptorProto {
        #[prost(string, optional, tag = "1")]
        pub(crate) name: Option<String>,
        #[prost(message, repeated, tag = "2")]
        pub(crate) method: Vec<MethodDescriptorProto>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct MethodDescriptorProto {
        #[prost(string, optional, tag = "1")]
        pub(crate) name: Option<String>,
    }
}

/// The service and method names of a serialized set, without building a [`DescriptorPool`].
pub(crate) fn method_names_of(
    bytes: &[u8],
    origin: &Origin,
) -> Result<MethodNames, DescriptorError> {
    let set =
        <names_only::FileDescriptorSet as prost::Message>::decode(bytes).map_err(|source| {
            DescriptorError::DecodeNames {
                origin: origin.clone(),
                source,
            }
        })?;
    let mut names = Vec::new();
    for file in set.file {
        let package = file.package.unwrap_or_default();
        for service in file.service {
            let name = service.name.unwrap_or_default();
            let full_name = if package.is_empty() {
                name
            } else {
                format!("{package}.{name}")
            };
            let methods = service.method.into_iter().filter_map(|m| m.name).collect();
            names.push((full_name, methods));
        }
    }
    Ok(names)
}

/// The service and method names of the embedded set, or of the file's when `path` is given.
pub(crate) fn method_names(path: Option<&Path>) -> Result<MethodNames, DescriptorError> {
    match path {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|source| DescriptorError::Read {
                path: path.to_owned(),
                source,
            })?;
            method_names_of(&bytes, &Origin::File(path.to_owned()))
        }
        None => method_names_of(EMBEDDED, &Origin::Embedded),
    }
}

/// The embedded set's pool.
pub fn embedded() -> Result<DescriptorPool, DescriptorError> {
    Descriptors::embedded().map(Descriptors::into_pool)
}

/// A set file's pool (see [`Descriptors::load`] for its version).
pub fn load(path: impl AsRef<Path>) -> Result<DescriptorPool, DescriptorError> {
    Descriptors::load(path.as_ref()).map(Descriptors::into_pool)
}

/// Where the version of the set at `set` is kept: same stem, extension `.version`.
pub(crate) fn version_path(set: &Path) -> PathBuf {
    set.with_extension("version")
}

/// Writes a set and its version file (or removes a stale version file when the version is unknown).
pub fn write(path: &Path, set: &[u8], version: Option<&str>) -> Result<(), DescriptorError> {
    let version_file = version_path(path);
    if version_file == path {
        return Err(DescriptorError::OutputPath {
            path: path.to_owned(),
        });
    }
    let write = |path: &Path, bytes: &[u8]| {
        std::fs::write(path, bytes).map_err(|source| DescriptorError::Write {
            path: path.to_owned(),
            source,
        })
    };
    write(path, set)?;
    match version {
        Some(version) => write(&version_file, format!("{version}\n").as_bytes()),
        None => match std::fs::remove_file(&version_file) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(DescriptorError::Write {
                path: version_file,
                source: err,
            }),
            _ => Ok(()),
        },
    }
}

fn parse_version(text: &str) -> Option<String> {
    let version = text.trim();
    (!version.is_empty()
        && version.len() <= MAX_VERSION_LEN
        && !version.chars().any(char::is_whitespace))
    .then(|| version.to_owned())
}

fn read_version(path: &Path) -> Result<Option<String>, DescriptorError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_version(&text)
            .map(Some)
            .ok_or_else(|| DescriptorError::BadVersion {
                path: path.to_owned(),
            }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DescriptorError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// One service of a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceSummary {
    pub(crate) name: String,
    pub(crate) methods: usize,
}

/// What a descriptor set holds, for `strait descriptors show` and `strait check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub(crate) origin: Origin,
    /// The Temporal server version, if known.
    pub(crate) version: Option<String>,
    pub(crate) files: usize,
    /// Size of the serialized set.
    pub(crate) bytes: usize,
    /// Every service the set defines, by name.
    pub(crate) services: Vec<ServiceSummary>,
    /// Methods of all services.
    pub(crate) methods: usize,
    /// Message types, nested ones included (map entries not).
    pub(crate) messages: usize,
    pub(crate) enums: usize,
}

impl fmt::Display for Summary {
    /// ```text
    /// embedded descriptor set: Temporal 1.32.0, 3 services, 250 methods, 1200 messages, ...
    ///   temporal.api.operatorservice.v1.OperatorService: 14 methods
    ///   ...
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = match &self.version {
            Some(v) => format!("Temporal {v}"),
            None => "Temporal version unknown".to_owned(),
        };
        write!(
            f,
            "{}: {version}, {} services, {} methods, {} messages, {} enums, {} files, {} bytes",
            self.origin,
            self.services.len(),
            self.methods,
            self.messages,
            self.enums,
            self.files,
            self.bytes
        )?;
        for service in &self.services {
            write!(f, "\n  {}: {} methods", service.name, service.methods)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn embedded_set_decodes_with_the_temporal_services() {
        let descriptors = Descriptors::embedded().unwrap();
        let pool = descriptors.pool();
        for service in REQUIRED_SERVICES {
            let service = pool.get_service_by_name(service).unwrap();
            assert!(service.methods().len() > 0, "{}", service.full_name());
        }
        let start = pool
            .get_message_by_name("temporal.api.workflowservice.v1.StartWorkflowExecutionRequest")
            .unwrap();
        assert!(start.get_field_by_name("namespace").is_some());
        let start_method = pool
            .get_service_by_name("temporal.api.workflowservice.v1.WorkflowService")
            .unwrap()
            .methods()
            .find(|m| m.name() == "StartWorkflowExecution")
            .unwrap();
        assert_eq!(start_method.input(), start);
        // Files are kept as the server serialized them: custom options survive.
        let http = pool.get_extension_by_name("google.api.http").unwrap();
        assert!(start_method.options().has_extension(&http));
        assert!(descriptors.version().is_some());

        let summary = descriptors.summary();
        assert_eq!(summary.bytes, EMBEDDED.len());
        assert_eq!(
            summary.methods,
            summary.services.iter().map(|s| s.methods).sum::<usize>()
        );
        let text = summary.to_string();
        assert!(
            text.starts_with("embedded descriptor set: Temporal "),
            "{text}"
        );
        assert!(text.contains("temporal.server.api.adminservice.v1.AdminService: "));
        assert_eq!(embedded().unwrap().files().len(), summary.files);
    }

    #[test]
    fn names_only_decoding_lists_what_the_pool_lists() {
        let sorted = |mut names: MethodNames| {
            names.iter_mut().for_each(|(_, methods)| methods.sort());
            names.sort();
            names
        };
        let from_pool = sorted(Descriptors::embedded().unwrap().method_names());
        let light = sorted(method_names(None).unwrap());
        assert_eq!(light, from_pool);
        for service in REQUIRED_SERVICES {
            let (_, methods) = light.iter().find(|(name, _)| name == service).unwrap();
            assert!(methods.len() > 10, "{service}: {methods:?}");
        }
        let err = method_names_of(b"\x0a\xff\xff\xff\xff\x0f", &Origin::Embedded).unwrap_err();
        assert!(matches!(err, DescriptorError::DecodeNames { .. }), "{err}");
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "strait-descriptor-set-{name}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn write_and_load_with_and_without_version() {
        let dir = temp_dir("roundtrip");
        let path = dir.join("other.binpb");
        write(&path, EMBEDDED, Some("9.9.9")).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("other.version")).unwrap(),
            "9.9.9\n"
        );
        let loaded = Descriptors::load(&path).unwrap();
        assert_eq!(loaded.version(), Some("9.9.9"));
        assert_eq!(loaded.origin(), &Origin::File(path.clone()));
        assert!(loaded.summary().to_string().contains("Temporal 9.9.9"));

        // Unknown version: the stale version file goes.
        write(&path, EMBEDDED, None).unwrap();
        assert!(!dir.join("other.version").exists());
        let summary = Descriptors::load(&path).unwrap().summary();
        assert_eq!(summary.version, None);
        assert!(summary.to_string().contains("Temporal version unknown"));

        assert!(matches!(
            write(&dir.join("x.version"), EMBEDDED, None),
            Err(DescriptorError::OutputPath { .. })
        ));
        std::fs::write(dir.join("other.version"), "two\nlines\n").unwrap();
        assert!(matches!(
            Descriptors::load(&path),
            Err(DescriptorError::BadVersion { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_files_and_missing_services_are_typed_errors() {
        let dir = temp_dir("errors");
        let missing = dir.join("missing.binpb");
        assert!(matches!(load(&missing), Err(DescriptorError::Read { .. })));

        let garbage = dir.join("garbage.binpb");
        std::fs::write(&garbage, b"\x0a\xff\xff\xff\xff\x0f not a descriptor set").unwrap();
        let err = load(&garbage).unwrap_err();
        assert!(matches!(err, DescriptorError::Decode { .. }), "{err}");
        assert!(err.to_string().contains("garbage.binpb"), "{err}");

        // A valid set without the services: only google/protobuf/empty.proto.
        let empty_proto = prost_reflect::prost_types::FileDescriptorProto {
            name: Some("google/protobuf/empty.proto".to_owned()),
            package: Some("google.protobuf".to_owned()),
            message_type: vec![prost_reflect::prost_types::DescriptorProto {
                name: Some("Empty".to_owned()),
                ..Default::default()
            }],
            syntax: Some("proto3".to_owned()),
            ..Default::default()
        };
        let set = prost_reflect::prost_types::FileDescriptorSet {
            file: vec![empty_proto],
        };
        let err = Descriptors::from_bytes(
            &prost::Message::encode_to_vec(&set),
            None,
            Origin::File(dir.join("partial.binpb")),
        )
        .unwrap_err();
        match &err {
            DescriptorError::MissingService { service, .. } => {
                assert_eq!(service, REQUIRED_SERVICES[0]);
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("partial.binpb"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
