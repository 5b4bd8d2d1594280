from django.urls import path

from . import api

app_name = "datasets"

urlpatterns = [
    path("datasets", api.DatasetListCreateApi.as_view(), name="dataset-list"),
    path("datasets/<uuid:dataset_id>", api.DatasetDetailApi.as_view(), name="dataset-detail"),
    path("datasets/<uuid:dataset_id>/versions", api.DatasetVersionListApi.as_view(), name="dataset-versions"),
    path("datasets/<uuid:dataset_id>/uploads", api.UploadCreateApi.as_view(), name="upload-create"),
    path("datasets/<uuid:dataset_id>/uploads/multipart", api.MultipartStartApi.as_view(), name="upload-multipart"),
    path("dataset-uploads/<uuid:upload_id>/complete", api.MultipartCompleteApi.as_view(), name="upload-complete"),
    path("dataset-versions/<uuid:version_id>", api.VersionDetailApi.as_view(), name="version-detail"),
    path("dataset-versions/<uuid:version_id>/lineage", api.VersionLineageApi.as_view(), name="version-lineage"),
    path("dataset-versions/<uuid:version_id>/rows", api.VersionRowsApi.as_view(), name="version-rows"),
    path("dataset-versions/<uuid:version_id>/download", api.VersionDownloadApi.as_view(), name="version-download"),
    path("dataset-versions/<uuid:version_id>/operations", api.OperationCreateApi.as_view(), name="version-operation"),
]
