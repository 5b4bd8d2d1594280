"""Sign-up and the caller's identity."""
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from .context import current_tenant_for_request
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
        return Response(MeOutput({"user": result.user, "organization": result.organization}).data, status=status.HTTP_201_CREATED)


class MeApi(APIView):
    @extend_schema(responses=MeOutput)
    def get(self, request):
        return Response(MeOutput({"user": request.user, "organization": current_tenant_for_request(request)}).data)
