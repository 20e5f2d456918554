"""Live subscriptions (WebSocket and SSE): being written on its own branch."""

from fastapi import APIRouter

router = APIRouter()
