//! Image records: a name pointing at a target descriptor.

use redb::{ReadableDatabase, ReadableTable};

use crate::db::{self, IMAGES};
use crate::digest;
use crate::error::{Error, Result};
use crate::filters::Filter;
use crate::labels;
use crate::records::{Descriptor, Image};
use crate::store::now;
use crate::Store;

/// Longest image name accepted; names are keys, and references are far shorter in practice.
const MAX_NAME: usize = 4096;

fn not_found(name: &str) -> Error {
    Error::NotFound(format!("image {name:?}"))
}

fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidArgument(
            "image name must not be empty".into(),
        ));
    }
    if name.len() > MAX_NAME {
        return Err(Error::InvalidArgument(format!(
            "image name longer than {MAX_NAME} bytes"
        )));
    }
    Ok(())
}

fn validate_target(name: &str, target: &Descriptor) -> Result<()> {
    digest::parse(&target.digest)
        .map_err(|e| Error::InvalidArgument(format!("image {name:?}: target digest: {e}")))?;
    if target.media_type.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "image {name:?}: target media type must not be empty"
        )));
    }
    if target.size < 0 {
        return Err(Error::InvalidArgument(format!(
            "image {name:?}: target size must not be negative"
        )));
    }
    Ok(())
}

fn validate(image: &Image) -> Result<()> {
    validate_name(&image.name)?;
    labels::validate(&image.labels)?;
    validate_target(&image.name, &image.target)
}

impl Store {
    pub fn image_get(&self, ns: &str, name: &str) -> Result<Image> {
        let txn = self.db().begin_read()?;
        db::get(&txn.open_table(IMAGES)?, ns, name)?.ok_or_else(|| not_found(name))
    }

    pub fn image_list(&self, ns: &str, filter: &Filter) -> Result<Vec<Image>> {
        let txn = self.db().begin_read()?;
        let all: Vec<Image> = db::scan(&txn.open_table(IMAGES)?, ns)?;
        Ok(all.into_iter().filter(|i| filter.matches(i)).collect())
    }

    /// Creates an image; timestamps are set by the store.
    pub fn image_create(&self, ns: &str, mut image: Image) -> Result<Image> {
        validate(&image)?;
        let txn = self.db().begin_write()?;
        db::ensure_namespace(&txn, ns)?;
        {
            let mut t = txn.open_table(IMAGES)?;
            if t.get((ns, image.name.as_str()))?.is_some() {
                return Err(Error::AlreadyExists(format!("image {:?}", image.name)));
            }
            let ts = now();
            image.created_at = ts;
            image.updated_at = ts;
            t.insert((ns, image.name.as_str()), db::encode(&image)?.as_slice())?;
        }
        txn.commit()?;
        Ok(image)
    }

    /// Field paths: `labels`, `labels.<k>`, `target`, `annotations`, `annotations.<k>`; empty
    /// replaces labels and target.
    pub fn image_update(&self, ns: &str, image: Image, fieldpaths: &[String]) -> Result<Image> {
        validate_name(&image.name)?;
        let txn = self.db().begin_write()?;
        db::ensure_namespace(&txn, ns)?;
        let updated = {
            let mut t = txn.open_table(IMAGES)?;
            let mut cur: Image =
                db::get(&t, ns, &image.name)?.ok_or_else(|| not_found(&image.name))?;
            if fieldpaths.is_empty() {
                cur.labels = image.labels;
                cur.target = image.target;
            } else {
                for path in fieldpaths {
                    if labels::apply_map_path(path, "labels", &mut cur.labels, &image.labels)
                        || labels::apply_map_path(
                            path,
                            "annotations",
                            &mut cur.target.annotations,
                            &image.target.annotations,
                        )
                    {
                        continue;
                    }
                    match path.as_str() {
                        "target" => cur.target = image.target.clone(),
                        _ => {
                            return Err(Error::InvalidArgument(format!(
                                "cannot update {path:?} field on image {:?}",
                                image.name
                            )))
                        }
                    }
                }
            }
            validate(&cur)?;
            cur.updated_at = now();
            t.insert((ns, cur.name.as_str()), db::encode(&cur)?.as_slice())?;
            cur
        };
        txn.commit()?;
        Ok(updated)
    }

    pub fn image_delete(&self, ns: &str, name: &str) -> Result<()> {
        let txn = self.db().begin_write()?;
        {
            let mut t = txn.open_table(IMAGES)?;
            if t.remove((ns, name))?.is_none() {
                return Err(not_found(name));
            }
        }
        txn.commit()?;
        Ok(())
    }
}
