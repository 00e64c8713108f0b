"""The legacy v1 (Girder) routes of the local archive.

Behaviour follows ``legacy-v1-api.md``: plain JSON arrays for lists,
``limit``/``offset``/``sort``/``sortdir`` paging (``limit=0`` = all),
``detail``, Girder-style JSON errors (400 for malformed or unknown ids, 401
without a login, 403 without permission), ``Girder-Token`` authentication.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .server import ApiError, Request, Response, basic_credentials

if TYPE_CHECKING:
    from .generator import User
    from .server import LocalArchive

_OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")


def register(archive: LocalArchive) -> None:
    """Add every v1 route to the archive's router."""
    data = archive.data

    def add(method: str, pattern: str, handler: Callable[..., Response]) -> None:
        archive.router.add("v1", method, pattern, handler)

    def shown(req: Request, value: Any) -> Any:
        return _summaries_for(req.user, data.users_by_id, value)

    # ---------------------------------------------------------------- users
    def authenticate(req: Request) -> Response:
        creds = basic_credentials(req.headers)
        if creds is None:
            if req.user is not None:
                return Response.json({"authToken": None, "user": _user_full(req.user)})
            raise ApiError(401, "You must log in.", "access")
        login, password = creds
        user = data.users_by_login.get(login)
        if user is None or user.password != password:
            raise ApiError(401, "Login failed.", "access")
        token = archive.issue_token(user)
        expires = (_dt.datetime.now(_dt.UTC) + _dt.timedelta(days=30)).isoformat()
        return Response.json({"authToken": {"token": token, "expires": expires, "scope": ["core.user_auth"]},
                              "user": _user_full(user)})

    def logout(req: Request) -> Response:
        token = req.headers.get("Girder-Token")
        if token:
            archive.revoke_token(token)
        return Response.json({"message": "Logged out."})

    def me(req: Request) -> Response:
        return Response.json(_user_full(req.user) if req.user else None)

    def user_by_id(req: Request, user_id: str) -> Response:
        user = _find(data.users_by_id, user_id, "user")
        return Response.json(user.summary(reveal=req.user is not None and req.user.may_read(user.id)))

    add("GET", r"user/authentication", authenticate)
    add("DELETE", r"user/authentication", logout)
    add("GET", r"user/me", me)
    add("GET", r"user/(?P<user_id>[^/]+)", user_by_id)

    # --------------------------------------------------------------- images
    def image_list(req: Request) -> Response:
        images = data.visible_images(req.user)
        view: tuple | None = ("v1 images", data.visibility(req.user))
        name = req.arg("name")
        if name:
            found = data.images_by_name.get(name)
            images = [found] if found is not None and data.can_read_image(req.user, found) else []
            view = None
        ids = req.arg("imageIds")
        if ids:
            try:
                wanted = set(json.loads(ids))
            except (ValueError, TypeError):
                raise ApiError(400, "Invalid JSON passed in imageIds parameter.", "validation", "imageIds") from None
            images = [im for im in images if im["_id"] in wanted]
            view = None
        images = _page(req, images, default_sort="name", view=view)
        if _flag(req, "detail"):
            return Response.json([_image_for(req.user, im) for im in images])
        return Response.json([{"_id": im["_id"], "name": im["name"], "updated": im["updated"]} for im in images])

    def image_detail(req: Request, image_id: str) -> Response:
        return Response.json(_image_for(req.user, _readable_image(req, image_id)))

    def image_download(req: Request, image_id: str) -> Response:
        image = _readable_image(req, image_id)
        response = Response.binary(data.image_jpeg(image_id), "image/jpeg", f"{image['name']}.jpg")
        if req.arg("contentDisposition") == "inline":
            response.headers["Content-Disposition"] = f'inline; filename="{image["name"]}.jpg"'
        return response

    def image_thumbnail(req: Request, image_id: str) -> Response:
        _readable_image(req, image_id)
        width = req.int_arg("width", 256)
        return Response.binary(data.thumbnail_jpeg(image_id, width), "image/jpeg")

    def image_superpixels(req: Request, image_id: str) -> Response:
        image = _readable_image(req, image_id)
        return Response.binary(data.superpixel_png(image_id), "image/png", f"{image['name']}_superpixels.png")

    add("GET", r"image", image_list)
    add("GET", r"image/(?P<image_id>[^/]+)", image_detail)
    add("GET", r"image/(?P<image_id>[^/]+)/download", image_download)
    add("GET", r"image/(?P<image_id>[^/]+)/thumbnail", image_thumbnail)
    add("GET", r"image/(?P<image_id>[^/]+)/superpixels", image_superpixels)

    def _readable_image(req: Request, image_id: str) -> dict:
        image = _find(data.images_by_id, image_id, "image")
        if not data.can_read_image(req.user, image):
            _deny(req.user, "image", image_id)
        return image

    def _image_for(user: User | None, image: dict) -> dict:
        record = dict(image)
        dataset = data.datasets_by_id.get(image["dataset"]["_id"])
        if dataset is not None:
            record["dataset"] = dict(image["dataset"], _accessLevel=data.access_level(user, dataset))
        return record

    # ------------------------------------------------------------- datasets
    def dataset_summary(user: User | None, ds: dict) -> dict:
        return {"_id": ds["_id"], "_accessLevel": data.access_level(user, ds), "name": ds["name"],
                "description": ds["description"], "updated": ds["updated"], "license": ds["license"]}

    def dataset_detail_record(user: User | None, ds: dict) -> dict:
        level = data.access_level(user, ds)
        record = dataset_summary(user, ds)
        record.update(_modelType="dataset", attribution=ds["attribution"], created=ds["created"],
                      creator=ds["creator"], count=sum(1 for im in data.images if im["dataset"]["_id"] == ds["_id"]))
        if level >= 1:
            record.update(owner=ds["owner"], metadataFiles=ds["metadataFiles"])
        return record

    def dataset_list(req: Request) -> Response:
        sets = [ds for ds in data.datasets if data.can_read_dataset(req.user, ds)]
        sets = _page(req, sets, default_sort="name")
        if _flag(req, "detail"):
            return Response.json([dataset_detail_record(req.user, ds) for ds in sets])
        return Response.json([dataset_summary(req.user, ds) for ds in sets])

    def _readable_dataset(req: Request, dataset_id: str, level: int = 0) -> dict:
        ds = _find(data.datasets_by_id, dataset_id, "dataset")
        if data.access_level(req.user, ds) < level:
            _deny(req.user, "dataset", dataset_id, "Write" if level >= 1 else "Read")
        return ds

    def dataset_detail(req: Request, dataset_id: str) -> Response:
        return Response.json(dataset_detail_record(req.user, _readable_dataset(req, dataset_id)))

    def dataset_access(req: Request, dataset_id: str) -> Response:
        ds = _readable_dataset(req, dataset_id, level=1)
        users = [data.users_by_id[u] for u in ds["access_users"]]
        listed = [{"id": u.id, "login": u.login, "name": f"{u.first_name} {u.last_name}", "level": 0, "flags": []}
                  for u in users]
        return Response.json({"access": {"users": listed, "groups": []},
                              "public": ds["public"]})

    def dataset_metadata(req: Request, dataset_id: str) -> Response:
        ds = _readable_dataset(req, dataset_id, level=1)
        return Response.json([{"fileId": f["fileId"], "time": f["time"], "user": ds["owner"]}
                              for f in ds["metadataFiles"]])

    def dataset_review(req: Request, dataset_id: str) -> Response:
        ds = _readable_dataset(req, dataset_id, level=1)
        pending = [im for im in data.images if im["dataset"]["_id"] == ds["_id"]][-3:]
        limit = req.int_arg("limit", 50)
        return Response.json([_image_for(req.user, im) for im in (pending[:limit] if limit else pending)])

    add("GET", r"dataset", dataset_list)
    add("GET", r"dataset/(?P<dataset_id>[^/]+)", dataset_detail)
    add("GET", r"dataset/(?P<dataset_id>[^/]+)/access", dataset_access)
    add("GET", r"dataset/(?P<dataset_id>[^/]+)/metadata", dataset_metadata)
    add("GET", r"dataset/(?P<dataset_id>[^/]+)/review", dataset_review)

    # -------------------------------------------------------------- studies
    def study_list(req: Request) -> Response:
        studies = [s for s in data.studies if data.can_read_study(req.user, s)]
        state = req.arg("state")
        if state == "complete":
            studies = [s for s in studies if _study_complete(s)]
        elif state == "active":
            studies = [s for s in studies if not _study_complete(s)]
        elif state:
            raise ApiError(400, f"Invalid state: {state!r}.", "validation", "state")
        user_id = req.arg("userId")
        if user_id:
            if user_id == "me":
                if req.user is None:
                    raise ApiError(401, "You must be logged in.", "access")
                user_id = req.user.id
            studies = [s for s in studies if any(u["_id"] == user_id for u in s["users"])]
        studies = _page(req, studies, default_sort="lowerName")
        if _flag(req, "detail"):
            return Response.json([shown(req, _study_record(s)) for s in studies])
        return Response.json([{k: s[k] for k in ("_id", "name", "description", "updated")} for s in studies])

    def _study_complete(study: dict) -> bool:
        return all(a["state"] == "complete" for a in data.annotations if a["studyId"] == study["_id"])

    def _study_record(study: dict) -> dict:
        return {k: v for k, v in study.items() if k != "public"}

    def _readable_study(req: Request, study_id: str) -> dict:
        study = _find(data.studies_by_id, study_id, "study")
        if not data.can_read_study(req.user, study):
            _deny(req.user, "study", study_id)
        return study

    def study_detail(req: Request, study_id: str) -> Response:
        study = _readable_study(req, study_id)
        if req.arg("format") == "csv":
            return Response(200, _study_csv(study).encode(), "text/csv")
        return Response.json(shown(req, _study_record(study)))

    def _study_csv(study: dict) -> str:
        questions = [q["id"] for q in study["questions"]]
        lines = [",".join(["study_id", "image", "user"] + questions)]
        for ann in data.annotations:
            if ann["studyId"] == study["_id"] and ann["state"] == "complete":
                row = [study["_id"], ann["image"]["name"], ann["user"]["name"]]
                lines.append(",".join(row + [ann["responses"].get(q, "") for q in questions]))
        return "\n".join(lines) + "\n"

    add("GET", r"study", study_list)
    add("GET", r"study/(?P<study_id>[^/]+)", study_detail)

    # ---------------------------------------------------------- annotations
    def annotation_list(req: Request) -> Response:
        study_id = req.arg("studyId")
        if not study_id:
            raise ApiError(400, "Parameter 'studyId' is required.", "validation", "studyId")
        study = _readable_study(req, study_id)
        found = [a for a in data.annotations if a["studyId"] == study["_id"]]
        for param, key in (("userId", "user"), ("imageId", "image")):
            wanted = req.arg(param)
            if wanted:
                found = [a for a in found if a[key]["_id"] == wanted]
        state = req.arg("state")
        if state:
            found = [a for a in found if a["state"] == state]
        if _flag(req, "detail"):
            return Response.json(shown(req, found))
        return Response.json([{"_id": a["_id"], "studyId": a["studyId"], "userId": a["user"]["_id"],
                               "imageId": a["image"]["_id"], "state": a["state"]} for a in found])

    def _readable_annotation(req: Request, annotation_id: str) -> dict:
        ann = _find(data.annotations_by_id, annotation_id, "annotation")
        _readable_study(req, ann["studyId"])
        return ann

    def annotation_detail(req: Request, annotation_id: str) -> Response:
        return Response.json(shown(req, _readable_annotation(req, annotation_id)))

    def _markup_feature(req: Request, annotation_id: str, feature_id: str) -> dict:
        ann = _readable_annotation(req, annotation_id)
        if ann["state"] != "complete":
            raise ApiError(400, "Only complete annotations have markup.", "validation")
        if feature_id not in ann.get("markups", {}):
            raise ApiError(400, f"Invalid feature id ({feature_id}).", "validation", "featureId")
        return ann

    def markup_superpixels(req: Request, annotation_id: str, feature_id: str) -> Response:
        ann = _markup_feature(req, annotation_id, feature_id)
        return Response.json(data.markup_values(ann, feature_id))

    def markup_mask(req: Request, annotation_id: str, feature_id: str) -> Response:
        import numpy as np

        from .generator import _png

        ann = _markup_feature(req, annotation_id, feature_id)
        values = np.asarray(data.markup_values(ann, feature_id))
        idx = data.superpixel_index(ann["image"]["_id"])
        return Response.binary(_png((values[idx] * 255).astype(np.uint8)), "image/png")

    add("GET", r"annotation", annotation_list)
    add("GET", r"annotation/(?P<annotation_id>[0-9a-zA-Z]+)", annotation_detail)
    add("GET", r"annotation/(?P<annotation_id>[^/]+)/markup/(?P<feature_id>[^/]+)/superpixels", markup_superpixels)
    add("GET", r"annotation/(?P<annotation_id>[^/]+)/markup/(?P<feature_id>[^/]+)/mask", markup_mask)
    add("GET", r"annotation/(?P<annotation_id>[0-9a-f]{24})/(?P<feature_id>[^/]+)", markup_superpixels)

    # -------------------------------------------------------- segmentations
    def segmentation_list(req: Request) -> Response:
        image_id = req.arg("imageId")
        segs = data.segmentations
        if image_id:
            _readable_image(req, image_id)
            segs = [s for s in segs if s["imageId"] == image_id]
        else:
            segs = [s for s in segs if data.can_read_image(req.user, data.images_by_id[s["imageId"]])]
        creator = req.arg("creatorId")
        if creator:
            segs = [s for s in segs if s["creator"]["_id"] == creator]
        segs = _page(req, segs, default_sort="created")
        return Response.json([{k: s[k] for k in ("_id", "created", "creator", "failed", "skill")} for s in segs])

    def _readable_segmentation(req: Request, seg_id: str) -> dict:
        seg = _find(data.segmentations_by_id, seg_id, "segmentation")
        _readable_image(req, seg["imageId"])
        return seg

    def segmentation_detail(req: Request, seg_id: str) -> Response:
        return Response.json(shown(req, _readable_segmentation(req, seg_id)))

    def segmentation_mask(req: Request, seg_id: str) -> Response:
        _readable_segmentation(req, seg_id)
        return Response.binary(data.segmentation_mask(seg_id), "image/png")

    add("GET", r"segmentation", segmentation_list)
    add("GET", r"segmentation/(?P<seg_id>[^/]+)", segmentation_detail)
    add("GET", r"segmentation/(?P<seg_id>[^/]+)/mask", segmentation_mask)
    add("GET", r"segmentation/(?P<seg_id>[^/]+)/thumbnail", segmentation_mask)


# ------------------------------------------------------------------ helpers
def _summaries_for(caller: User | None, users_by_id: dict[str, User], value: Any) -> Any:
    """``value`` with every user summary in it as ``caller`` may see it (login and names where permitted)."""
    if isinstance(value, list):
        return [_summaries_for(caller, users_by_id, item) for item in value]
    if not isinstance(value, dict):
        return value
    user = users_by_id.get(value.get("_id", "")) if value.keys() <= {"_id", "name"} else None
    if user is not None:
        return user.summary(reveal=caller is not None and caller.may_read(user.id))
    return {key: _summaries_for(caller, users_by_id, item) for key, item in value.items()}


def _user_full(user: User) -> dict:
    return {"_id": user.id, "login": user.login, "firstName": user.first_name, "lastName": user.last_name,
            "admin": user.admin, "name": f"{user.first_name} {user.last_name}"}


def _find(table: dict, object_id: str, kind: str) -> Any:
    """A record by id, or Girder's 400 for a malformed or unknown id."""
    if not _OBJECT_ID.match(object_id):
        raise ApiError(400, f"Invalid ObjectId: {object_id}", "validation", "id")
    found = table.get(object_id)
    if found is None:
        raise ApiError(400, f"Invalid {kind} id ({object_id}).", "validation", "id")
    return found


def _deny(user: User | None, kind: str, object_id: str, level: str = "Read") -> None:
    if user is None:
        raise ApiError(401, f"{level} access denied for {kind} {object_id} (user: None).", "access")
    raise ApiError(403, f"{level} access denied for {kind} {object_id} (user: {user.id}).", "access")


def _flag(req: Request, name: str) -> bool:
    return (req.arg(name) or "false").lower() in ("true", "1", "yes")


def _sort_key(field: str) -> Callable[[dict], Any]:
    if field == "lowerName":
        return lambda rec: str(rec.get("name", "")).lower()
    return lambda rec: (rec.get(field) is None, rec.get(field) if not isinstance(rec.get(field), dict) else "")


def _page(req: Request, items: list[dict], default_sort: str, view: tuple | None = None) -> list[dict]:
    """One offset page of ``items`` sorted as asked.

    With ``view`` (a key naming what ``items`` holds for this caller), the
    sorted list is kept between pages, so listing N records costs N log N
    once instead of a sort per page.
    """
    limit = req.int_arg("limit", 50)
    offset = req.int_arg("offset", 0)
    if limit < 0 or offset < 0:
        raise ApiError(400, "limit and offset must not be negative.", "validation", "limit")
    sort = req.arg("sort") or default_sort
    sortdir = req.int_arg("sortdir", 1)
    if sortdir not in (1, -1):
        raise ApiError(400, "sortdir must be 1 or -1.", "validation", "sortdir")

    def ordered_items() -> list[dict]:
        return sorted(items, key=_sort_key(sort), reverse=sortdir == -1)

    ordered = req.data.view(view + (sort, sortdir), ordered_items) if view is not None else ordered_items()
    return ordered[offset:offset + limit] if limit else ordered[offset:]
