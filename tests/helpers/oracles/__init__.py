"""Checkers for the golden vectors computed with the official CLML and MulCon code."""
