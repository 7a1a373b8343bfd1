"""Agents: what makes an agentic change in a target's workspace."""

from resources.agents.base import Agent, AgentRequest, AgentResult, ModelUsage

__all__ = ["Agent", "AgentRequest", "AgentResult", "ModelUsage"]
