"""Sign-up and the caller's identity."""
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from .context import current_access
from .permissions import ROLE_PERMISSIONS
from .serializers import MeOutput, SignupInput
from .services import user_signup


class SignupThrottle(AnonRateThrottle):
    rate = "20/hour"


class SignupApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [SignupThrottle]

    @extend_schema(request=SignupInput, responses={201: MeOutput})
    def post(self, request):
        data = SignupInput(data=request.data)
        data.is_valid(raise_exception=True)
        result = user_signup(**data.validated_data)
        body = {"user": result.user, "organization": result.organization, "role": "owner",
                "permissions": sorted(ROLE_PERMISSIONS["owner"])}
        return Response(MeOutput(body).data, status=status.HTTP_201_CREATED)


class MeApi(APIView):
    permission_classes = [IsAuthenticated]  # any signed-in caller may ask who they are
    @extend_schema(responses=MeOutput)
    def get(self, request):
        access = current_access(request)
        return Response(
            MeOutput(
                {
                    "user": access.user if access else None,
                    "organization": access.tenant if access else None,
                    "role": access.role if access else None,
                    "permissions": sorted(access.permissions) if access else [],
                }
            ).data
        )
