"""Uploading source videos: the page (researchers and admins), its per-file JSON endpoint, and the API.

* ``/videos/upload/`` (GET): pick one or many files, fill each one's metadata (title defaults to the file name);
  the page's script posts each file to ``/videos/upload/file/`` with XMLHttpRequest, showing upload progress and each
  file's result as it completes. Without script, the form posts every file to this page (POST) with one set of
  metadata, and the page lists the results.
* ``/videos/upload/file/`` (POST, multipart: ``file`` plus metadata fields): JSON ``{"ok": true, "video": {...}}``
  (201) or ``{"ok": false, "reason", "code"}`` (400; 409 duplicate; 413 too large).
* ``/api/videos/`` (GET list, POST multipart as above) and ``/api/videos/<id>/`` (GET): the same for scripts.

Uploads are cut off by an upload handler as soon as a file passes ``PIPELINE["MAX_UPLOAD_BYTES"]``, before Django
has spooled all of it, and nothing of a refused file is stored (``datasets.ingest.video_ingest``).
"""
from __future__ import annotations

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http.multipartparser import MultiPartParserError
from django.http import JsonResponse
from django.shortcuts import render
from django.template.defaultfilters import filesizeformat
from django.urls import NoReverseMatch, reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from datasets import ingest
from datasets.models import SourceVideo
from microverse_site.roles import ADMIN, RESEARCHER, api_role_permission, role_required

STATUS_FOR_CODE = {"too_large": 413, "duplicate": 409, "storage_full": 507}


# ------------------------------------------------------------------------------------------- upload handling


class SizeLimitUploadHandler(FileUploadHandler):
    """Stops reading a multipart upload as soon as one file passes the ingest limit; the view then refuses it
    (``request.upload_refused``) without Django having stored the rest of it."""

    def __init__(self, request=None, limit: int | None = None):
        super().__init__(request)
        self.limit = int(settings.PIPELINE["MAX_UPLOAD_BYTES"] if limit is None else limit)
        self.received = 0

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > self.limit:
            self.request.upload_refused = ingest.IngestError(
                f"{ingest.sanitise_name(self.file_name)}: the file is larger than the limit of "
                f"{filesizeformat(self.limit)}; nothing was stored.", "too_large")
            raise StopUpload(connection_reset=False)
        return raw_data

    def file_complete(self, file_size):
        return None


def _limit_uploads(request) -> None:
    request.upload_refused = None
    request.upload_handlers.insert(0, SizeLimitUploadHandler(request))


def _video_url(video: SourceVideo) -> str:
    """The video's page where one exists, else its API record."""
    try:
        return reverse("video-detail", args=[video.pk])
    except NoReverseMatch:
        return reverse("api-video-detail", args=[video.pk])


def _metadata(data) -> dict:
    return {key: data.get(key, "") for key in ingest.METADATA_FIELDS}


def _video_json(video: SourceVideo) -> dict:
    return {
        "id": video.pk, "title": video.title, "original_name": video.original_name, "url": _video_url(video),
        "admission": video.admission, "admission_reason": video.admission_reason, "width": video.width,
        "height": video.height, "fps": video.fps, "frame_count": video.frame_count, "duration": video.duration,
        "codec": video.codec, "size_bytes": video.size_bytes, "sha256": video.sha256,
    }


def _ingest_one(request, upload, data) -> SourceVideo:
    return ingest.video_ingest(fileobj=upload, original_name=upload.name, metadata=_metadata(data),
                               user=request.user, request_id=getattr(request, "request_id", ""))


# ------------------------------------------------------------------------------------------------- the page


def _page_context(**extra) -> dict:
    pipeline = settings.PIPELINE
    return {"rules": ingest.admission_rules(), "licenses": pipeline["ALLOWED_LICENSES"],
            "max_upload": pipeline["MAX_UPLOAD_BYTES"], "min_height": pipeline["MIN_HEIGHT"],
            "recent": SourceVideo.objects.select_related("uploaded_by")[:20], **extra}


def _unparseable_body(request) -> ingest.IngestError | None:
    """Parse the multipart body now, so a body Django cannot parse (e.g. a part header over its limit) gets this
    page's own refusal instead of a bare 400."""
    try:
        request.POST  # noqa: B018 - parsing is the point
    except MultiPartParserError as exc:
        return ingest.IngestError(f"The upload could not be read: {exc}", "unreadable")
    return None


@csrf_exempt  # the upload handler must be installed before the CSRF check reads the body; checked just below
@role_required(RESEARCHER, ADMIN)
def video_upload(request):
    if request.method == "POST":
        _limit_uploads(request)
        error = _unparseable_body(request)
        if error is not None:
            results = [ingest.IngestResult(name="", reason=error.reason, code=error.code)]
            return render(request, "datasets/upload.html", _page_context(results=results), status=400)
        return csrf_protect(_video_upload_post)(request)
    return render(request, "datasets/upload.html", _page_context())


def _video_upload_post(request):
    results = []
    uploads = request.FILES.getlist("file")  # parses the body (and runs the size-limit handler)
    if request.upload_refused:
        results.append(ingest.IngestResult(name="", reason=request.upload_refused.reason,
                                           code=request.upload_refused.code))
    if not uploads and not results:
        results.append(ingest.IngestResult(name="", reason="Choose at least one file.", code="empty"))
    for upload in uploads:
        name = ingest.sanitise_name(upload.name)
        results.append(ingest.attempt(name, lambda upload=upload: _ingest_one(request, upload, request.POST)))
    for result in results:
        if result.ok:
            result.video.page_url = _video_url(result.video)
    status_code = 200 if all(r.ok for r in results) else 400
    return render(request, "datasets/upload.html", _page_context(results=results), status=status_code)


@csrf_exempt  # as above
@role_required(RESEARCHER, ADMIN)
def video_upload_file(request):
    if request.method != "POST":
        return JsonResponse({"ok": False, "reason": "POST a file.", "code": "method"}, status=405)
    _limit_uploads(request)
    error = _unparseable_body(request)
    if error is not None:
        return _refusal(error)
    return csrf_protect(_video_upload_file_post)(request)


def _refusal(error: ingest.IngestError, name: str = "") -> JsonResponse:
    return JsonResponse({"ok": False, "name": name, "reason": error.reason, "code": error.code},
                        status=STATUS_FOR_CODE.get(error.code, 400))


def _video_upload_file_post(request):
    upload = request.FILES.get("file")  # parses the body (and runs the size-limit handler)
    if request.upload_refused:
        return _refusal(request.upload_refused)
    if upload is None:
        return _refusal(ingest.IngestError("No file was sent (field 'file').", "empty"))
    name = ingest.sanitise_name(upload.name)
    try:
        video = _ingest_one(request, upload, request.POST)
    except ingest.IngestError as error:
        return _refusal(error, name)
    return JsonResponse({"ok": True, "name": name, "video": _video_json(video)}, status=201)


# ---------------------------------------------------------------------------------------------------- the API


class SourceVideoSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    file_url = serializers.SerializerMethodField()
    uploaded_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    source_url = serializers.CharField(read_only=True, help_text="The http(s) URL it came from; empty if none.")

    class Meta:
        model = SourceVideo
        fields = ["id", "url", "title", "description", "license", "source_url", "views", "likes", "comments",
                  "original_name", "size_bytes", "sha256", "width", "height", "fps", "frame_count", "duration",
                  "codec", "admission", "admission_reason", "file_url", "uploaded_by", "created_at"]
        read_only_fields = fields

    def get_url(self, video) -> str:
        return _video_url(video)

    def get_file_url(self, video) -> str:
        return video.file.url if video.file else ""


class VideoUploadSerializer(serializers.Serializer):
    """The multipart body of POST /api/videos/ (documentation; the service validates)."""

    file = serializers.FileField()
    title = serializers.CharField(required=False, help_text="Default: the file name without its extension.")
    description = serializers.CharField(required=False)
    license = serializers.CharField(required=False, help_text="Must permit reuse to be admitted (see settings).")
    source_url = serializers.URLField(required=False)
    views = serializers.IntegerField(required=False, min_value=0)
    likes = serializers.IntegerField(required=False, min_value=0)
    comments = serializers.IntegerField(required=False, min_value=0)


class RefusalSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    reason = serializers.CharField()
    code = serializers.CharField()


class SourceVideoList(generics.ListAPIView):
    """Source videos, newest first (filter: ``admission``); POST a multipart upload to ingest one."""

    serializer_class = SourceVideoSerializer
    permission_classes = [api_role_permission(RESEARCHER, ADMIN)]
    parser_classes = [MultiPartParser, FormParser]

    def initialize_request(self, request, *args, **kwargs):
        if request.method == "POST":
            _limit_uploads(request)
        return super().initialize_request(request, *args, **kwargs)

    def get_queryset(self):
        queryset = SourceVideo.objects.select_related("uploaded_by")
        admission = self.request.query_params.get("admission", "")
        if admission in SourceVideo.Admission.values:
            queryset = queryset.filter(admission=admission)
        return queryset

    @extend_schema(parameters=[OpenApiParameter("admission", str, enum=SourceVideo.Admission.values)])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(request={"multipart/form-data": VideoUploadSerializer},
                   responses={201: SourceVideoSerializer, 400: RefusalSerializer, 409: RefusalSerializer,
                              413: RefusalSerializer})
    def post(self, request, *args, **kwargs):
        files = request.FILES  # parses the body (and runs the size-limit handler)
        refused = getattr(request._request, "upload_refused", None)
        if refused:
            return Response({"ok": False, "reason": refused.reason, "code": refused.code},
                            status=STATUS_FOR_CODE.get(refused.code, 400))
        upload = files.get("file")
        if upload is None:
            return Response({"ok": False, "reason": "No file was sent (field 'file').", "code": "empty"},
                            status=status.HTTP_400_BAD_REQUEST)
        try:
            video = _ingest_one(request, upload, request.data)
        except ingest.IngestError as error:
            return Response({"ok": False, "reason": error.reason, "code": error.code},
                            status=STATUS_FOR_CODE.get(error.code, 400))
        return Response(self.get_serializer(video).data, status=status.HTTP_201_CREATED)


class SourceVideoDetail(generics.RetrieveAPIView):
    """One source video with its probe values and admission."""

    serializer_class = SourceVideoSerializer
    permission_classes = [api_role_permission(RESEARCHER, ADMIN)]
    queryset = SourceVideo.objects.select_related("uploaded_by")
