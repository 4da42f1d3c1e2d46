import sys

try:
    from onnxprune.cli import main
except KeyboardInterrupt:  # Ctrl-C while still importing
    print("onnxprune: interrupted", file=sys.stderr)
    sys.exit(130)

if __name__ == "__main__":
    main()
