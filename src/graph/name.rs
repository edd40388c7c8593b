//! Names the graph holds for what a step refers to: a stage's name and the
//! image a stage starts from or reads.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::oci::{ImageRef, RefError};

/// A stage's name (`FROM … AS name`, a KDL stage or image). Names compare
/// without regard to case, as Docker's do; each front end checks its own
/// spelling rules before making one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct StageName(String);

impl StageName {
    pub fn new(name: impl Into<String>) -> Self {
        StageName(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `text` (a `--target`, a `--from=`) names this stage.
    pub fn is(&self, text: &str) -> bool {
        self.0.eq_ignore_ascii_case(text)
    }
}

impl fmt::Display for StageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An image a stage starts from or reads (`FROM`, `COPY --from`, `RUN --mount
/// from=`): a checked reference, kept as written (global args expanded),
/// since cache keys and history name the image as the user did.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageName {
    written: String,
    reference: ImageRef,
}

impl ImageName {
    pub fn parse(text: &str) -> Result<Self, RefError> {
        Ok(ImageName { written: text.to_string(), reference: text.parse()? })
    }

    pub fn as_str(&self) -> &str {
        &self.written
    }

    pub fn reference(&self) -> &ImageRef {
        &self.reference
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

impl Serialize for ImageName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_match_without_case() {
        let name = StageName::new("build");
        assert!(name.is("BUILD"));
        assert!(!name.is("builder"));
    }

    #[test]
    fn an_image_name_keeps_its_text_and_its_reference() {
        let name = ImageName::parse("docker.io/library/busybox").unwrap();
        assert_eq!(name.as_str(), "docker.io/library/busybox");
        assert_eq!(name.reference().to_string(), "busybox:latest");
        assert!(ImageName::parse("Not A Reference").is_err());
    }
}
