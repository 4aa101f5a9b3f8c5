//! Getting images onto the daemon before anything is timed.

use std::time::{Duration, Instant};

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::{ImageSpec, ImageStatusRequest, PullImageRequest};
use tonic::transport::Channel;

use crate::error::Error;

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

/// Pulls `image`; returns how long the pull took and the image ref the daemon reports.
pub async fn pull(
    client: &mut ImageServiceClient<Channel>,
    image: &str,
) -> Result<(Duration, String), Error> {
    let t0 = Instant::now();
    let r = client
        .pull_image(PullImageRequest {
            image: spec(image),
            ..Default::default()
        })
        .await
        .map_err(Error::rpc("PullImage", image))?
        .into_inner();
    Ok((t0.elapsed(), r.image_ref))
}

/// Whether the daemon has `image` (ImageStatus answers an empty image for a missing one).
pub async fn present(client: &mut ImageServiceClient<Channel>, image: &str) -> Result<bool, Error> {
    let r = client
        .image_status(ImageStatusRequest {
            image: spec(image),
            verbose: false,
        })
        .await
        .map_err(Error::rpc("ImageStatus", image))?
        .into_inner();
    Ok(r.image.is_some_and(|i| !i.id.is_empty()))
}

/// Makes sure each image is on the daemon before timing: when the caller promised they were
/// pulled already, a missing one is an error (a pull inside the timed loop would skew it);
/// otherwise missing ones are pulled now.
pub async fn ensure(
    client: &mut ImageServiceClient<Channel>,
    images: &[&str],
    already_pulled: bool,
) -> Result<(), Error> {
    for image in images {
        if present(client, image).await? {
            continue;
        }
        if already_pulled {
            return Err(Error::ImageMissing {
                image: image.to_string(),
            });
        }
        pull(client, image).await?;
    }
    Ok(())
}
