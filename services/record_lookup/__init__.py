"""The record-lookup service: cross-hospital history and the emergency traffic light."""
