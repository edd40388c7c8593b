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

/// The stage `text` names among `names` (in stage order), as `--target`,
/// `COPY --from` and `FROM` read it: by name without case, else by index.
/// The one lookup the front ends (before a graph exists) and the graph share.
pub fn find_stage<'a>(names: impl IntoIterator<Item = Option<&'a StageName>>, text: &str) -> Option<super::StageId> {
    let names: Vec<Option<&StageName>> = names.into_iter().collect();
    let by_name = names.iter().position(|n| n.is_some_and(|n| n.is(text)));
    let by_index = || text.parse::<usize>().ok().filter(|i| *i < names.len());
    by_name.or_else(by_index).map(super::StageId)
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
    fn stages_are_found_by_name_then_index() {
        let names = [Some(StageName::new("build")), None, Some(StageName::new("2"))];
        let find = |text| find_stage(names.iter().map(Option::as_ref), text).map(|id| id.0);
        assert_eq!(find("BUILD"), Some(0));
        assert_eq!(find("1"), Some(1));
        assert_eq!(find("2"), Some(2), "a name before an index");
        assert_eq!(find("3"), None);
        assert_eq!(find("test"), None);
    }

    #[test]
    fn an_image_name_keeps_its_text_and_its_reference() {
        let name = ImageName::parse("docker.io/library/busybox").unwrap();
        assert_eq!(name.as_str(), "docker.io/library/busybox");
        assert_eq!(name.reference().to_string(), "busybox:latest");
        assert!(ImageName::parse("Not A Reference").is_err());
    }
}
