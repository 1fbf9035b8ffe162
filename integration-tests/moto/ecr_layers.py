"""ECR's layer API, which moto 5.2 lacks, behaving like ECR.

moto answers InitiateLayerUpload, UploadLayerPart, CompleteLayerUpload and
BatchCheckLayerAvailability with "not implemented", does not check that an image's
layers exist, and reports an immutable tag conflict as ImageAlreadyExistsException.
This adds what the Docker mirror relies on, with ECR's rules:
- parts must be consecutive (partFirstByte = bytes received so far), else
  InvalidLayerPartException with lastValidByteReceived, as ECR answers;
- CompleteLayerUpload hashes what was received: a wrong digest is InvalidLayerException,
  an existing layer is LayerAlreadyExistsException;
- PutImage of an image manifest whose config or layers (an artifact manifest: blobs;
  foreign layers excepted, which are never pushed) were never uploaded is
  LayersNotFoundException; an index naming a manifest the repository does not hold is
  ReferencedImagesNotFoundException; changing an immutable tag is ImageTagAlreadyExistsException
  (unless the repository's exclusion filters, IMMUTABLE_WITH_EXCLUSION, name the tag);
- GetDownloadUrlForLayer answers, as ECR does, a URL that needs no signature (ECR's is a
  presigned S3 URL), served here from the bytes kept on disk (PILLAR_ECR_LAYERS_DIR);
  a layer the repository lacks is LayersNotFoundException;
- an untagged PutImage (by digest) on a repository with tag exclusion filters, which moto
  fails on.
"""

import base64
import fnmatch
import hashlib
import json
import os
import tempfile
import uuid

from moto.moto_server.werkzeug_app import DomainDispatcherApplication

from moto.ecr.models import ECRBackend, ecr_backends
from moto.ecr.responses import ECRResponse

from errors import error

PART_SIZE = 5 * 1024 * 1024
LAYERS = {}  # (account, region, repository) -> set of digests
UPLOADS = {}  # upload id -> {"key", "sha256", "size", "file"}
LAYERS_DIR = os.environ.get("PILLAR_ECR_LAYERS_DIR") or tempfile.mkdtemp(prefix="ecr-layers-")
DOWNLOAD_PATH = "/pillars-ecr-layer/"


def layer_path(digest):
    return os.path.join(LAYERS_DIR, digest.removeprefix("sha256:"))


def repository(response):
    name = response._get_param("repositoryName")
    backend = ecr_backends[response.current_account][response.region]
    if name not in backend.repositories:
        raise error(
            "RepositoryNotFoundException",
            f"The repository with name '{name}' does not exist in the registry "
            f"with id '{response.current_account}'",
        )
    return backend.repositories[name], (response.current_account, response.region, name)


def batch_check_layer_availability(self):
    repo, key = repository(self)
    present = LAYERS.get(key, set())
    layers, failures = [], []
    for digest in self._get_param("layerDigests"):
        if digest in present:
            layers.append({"layerDigest": digest, "layerAvailability": "AVAILABLE"})
        else:
            failures.append(
                {"layerDigest": digest, "failureCode": "MissingLayerDigest",
                 "failureReason": "Requested layer not found"}
            )
    return json.dumps({"layers": layers, "failures": failures})


def initiate_layer_upload(self):
    repo, key = repository(self)
    upload_id = str(uuid.uuid4())
    os.makedirs(LAYERS_DIR, exist_ok=True)
    part_file = open(os.path.join(LAYERS_DIR, f"upload-{upload_id}"), "wb")
    UPLOADS[upload_id] = {"key": key, "sha256": hashlib.sha256(), "size": 0, "file": part_file}
    return json.dumps({"uploadId": upload_id, "partSize": PART_SIZE})


def upload(self):
    repo, key = repository(self)
    upload_id = self._get_param("uploadId")
    state = UPLOADS.get(upload_id)
    if state is None or state["key"] != key:
        raise error("UploadNotFoundException", f"Upload {upload_id} not found")
    return key, upload_id, state


def upload_layer_part(self):
    key, upload_id, state = upload(self)
    blob = base64.b64decode(self._get_param("layerPartBlob"))
    first, last = self._get_param("partFirstByte"), self._get_param("partLastByte")
    if first != state["size"] or last != first + len(blob) - 1:
        raise error(
            "InvalidLayerPartException",
            f"part {first}-{last} ({len(blob)} bytes) does not follow byte {state['size']}",
            registryId=key[0], repositoryName=key[2], uploadId=upload_id,
            lastValidByteReceived=state["size"] - 1,
        )
    state["sha256"].update(blob)
    state["file"].write(blob)
    state["size"] += len(blob)
    return json.dumps({"registryId": key[0], "repositoryName": key[2], "uploadId": upload_id,
                       "lastByteReceived": state["size"] - 1})


def complete_layer_upload(self):
    key, upload_id, state = upload(self)
    (digest,) = self._get_param("layerDigests")
    actual = "sha256:" + state["sha256"].hexdigest()
    del UPLOADS[upload_id]
    state["file"].close()
    if digest != actual:
        os.remove(state["file"].name)
        raise error("InvalidLayerException", f"digest {digest} does not match the upload ({actual})")
    os.replace(state["file"].name, layer_path(digest))
    present = LAYERS.setdefault(key, set())
    if digest in present:
        raise error("LayerAlreadyExistsException", f"layer {digest} already exists")
    present.add(digest)
    return json.dumps({"registryId": key[0], "repositoryName": key[2], "uploadId": upload_id,
                       "layerDigest": digest})


original_put_image = ECRResponse.put_image


def put_image(self):
    repo, key = repository(self)
    manifest = json.loads(self._get_param("imageManifest"))
    wanted = [manifest["config"]] + manifest.get("layers", []) if "config" in manifest else []
    wanted += manifest.get("blobs", [])  # an artifact manifest's
    # Foreign (non-distributable) layers are fetched from their URLs, never pushed.
    wanted = [d for d in wanted if ".foreign." not in d.get("mediaType", "") and ".nondistributable." not in d.get("mediaType", "")]
    missing = [d["digest"] for d in wanted if d["digest"] not in LAYERS.get(key, set())]
    if missing:
        raise error("LayersNotFoundException", f"layers not found: {', '.join(missing)}")
    held = {image.get_image_digest() for image in repo.images}
    unknown = [d["digest"] for d in manifest.get("manifests", []) if d["digest"] not in held]
    if unknown:
        raise error(
            "ReferencedImagesNotFoundException",
            f"The manifest list is referencing images that do not exist: {', '.join(unknown)}",
        )
    tag = self._get_param("imageTag")
    text = self._get_param("imageManifest")
    excluded = any(
        f.get("filterType") == "WILDCARD" and fnmatch.fnmatchcase(tag or "", f.get("filter", ""))
        for f in repo.image_tag_mutability_exclusion_filters or []
    )
    if tag and repo.is_tag_immutable() and not excluded:
        for image in repo.images:
            if tag in (image.image_tags or []) and image.image_manifest != text:
                raise error(
                    "ImageTagAlreadyExistsException",
                    f"The image tag '{tag}' already exists in the '{key[2]}' repository "
                    "and cannot be overwritten because the repository is immutable.",
                )
    return original_put_image(self)


def get_download_url_for_layer(self):
    repo, key = repository(self)
    digest = self._get_param("layerDigest")
    if digest not in LAYERS.get(key, set()):
        raise error("LayersNotFoundException", f"layer {digest} not found in {key[2]}")
    host = self.headers.get("Host")
    return json.dumps({"downloadUrl": f"http://{host}{DOWNLOAD_PATH}{digest}", "layerDigest": digest})


original_dispatch = DomainDispatcherApplication.__call__


def dispatch(self, environ, start_response):
    """Serves the download URLs; everything else goes to moto."""
    path = environ.get("PATH_INFO", "")
    if not path.startswith(DOWNLOAD_PATH):
        return original_dispatch(self, environ, start_response)
    digest = path[len(DOWNLOAD_PATH):]
    try:
        if not digest.removeprefix("sha256:").isalnum():
            raise FileNotFoundError(digest)
        stored = open(layer_path(digest), "rb")
    except FileNotFoundError:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no such layer"]
    size = os.fstat(stored.fileno()).st_size
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
    return iter(lambda: stored.read(1 << 20), b"")


original_resolve = ECRBackend._resolve_image_tag_mutability


def resolve_image_tag_mutability(self, repository, proposed_image_tag):
    """An untagged push (by digest) moves no tag: moto 5.2 fails on it when the repository
    has exclusion filters (it matches them against None)."""
    if proposed_image_tag is None:
        return []
    return original_resolve(self, repository, proposed_image_tag)


def install():
    ECRBackend._resolve_image_tag_mutability = resolve_image_tag_mutability
    ECRResponse.get_download_url_for_layer = get_download_url_for_layer
    DomainDispatcherApplication.__call__ = dispatch
    ECRResponse.batch_check_layer_availability = batch_check_layer_availability
    ECRResponse.initiate_layer_upload = initiate_layer_upload
    ECRResponse.upload_layer_part = upload_layer_part
    ECRResponse.complete_layer_upload = complete_layer_upload
    ECRResponse.put_image = put_image
